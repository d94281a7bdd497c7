"""``fraudops airflow ...``: the lifecycle through Airflow on the embedded default.

* ``init``: the Airflow home under ``FRAUDOPS_HOME/airflow``, its SQLite metadata database
  and the admin login.
* ``demo``: runs ``fraud_feature_materialization`` and ``fraud_training`` with
  ``airflow dags test`` (generating data first when the warehouse is empty) and prints the
  summary: DAG run states, data version, model version, gate, aliases, bundle.
* ``up``: the operator setup: ``airflow standalone`` (API server with the UI, scheduler,
  DAG processor, triggerer) and the MLflow UI, with where to open them and how to log in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fraudops.cli._common import console, emit_json, fail, settings, step

if TYPE_CHECKING:
    from fraudops.orchestration.bootstrap import EmbeddedAirflow
    from fraudops.orchestration.runs import DagRunResult
    from fraudops.settings import Settings

app = typer.Typer(help="Airflow on the embedded default: init, demo (run the DAGs), up (UI).", no_args_is_help=True)

MATERIALIZATION_DAG = "fraud_feature_materialization"
TRAINING_DAG = "fraud_training"


def _embedded(cfg: Settings, api_port: int = 8080, mlflow_port: int = 5000) -> EmbeddedAirflow:
    from fraudops.orchestration.bootstrap import AirflowSetupError, embedded_airflow

    if cfg.profile != "local":
        fail(
            "`fraudops airflow` runs the embedded default (FRAUDOPS_PROFILE=local); production uses airflow.cfg.example"
        )
    try:
        return embedded_airflow(cfg, api_port=api_port, mlflow_port=mlflow_port)
    except AirflowSetupError as exc:
        fail(str(exc))


def _init(airflow: EmbeddedAirflow) -> dict[str, Any]:
    from fraudops.orchestration.bootstrap import AirflowSetupError, initialize

    try:
        with step(f"initializing Airflow in {airflow.home}"):
            return initialize(airflow)
    except AirflowSetupError as exc:
        fail(str(exc))


@app.command()
def init(force: bool = typer.Option(False, help="Run `airflow db migrate` even if the database is current.")) -> None:
    """Create the embedded Airflow: home, SQLite metadata database, admin login."""
    from fraudops.orchestration.bootstrap import AirflowSetupError, initialize

    cfg = settings()
    cfg.ensure_home()
    airflow = _embedded(cfg)
    try:
        with step(f"initializing Airflow in {airflow.home}"):
            info = initialize(airflow, force=force)
    except AirflowSetupError as exc:
        fail(str(exc))
    console().print(
        f"Airflow {info['airflow_version']} in {info['airflow_home']} (LocalExecutor, SQLite); "
        f"login [bold]{info['login']['user']}[/] / [bold]{info['login']['password']}[/]"
    )
    emit_json(info)


def _reference_time(cfg: Settings) -> datetime:
    """The end of the data: the newest transaction, rounded up to the hour."""
    import pyarrow.compute as pc

    from fraudops import schema
    from fraudops.data.warehouse import open_warehouse

    wh = open_warehouse(cfg)
    try:
        newest: datetime | None = pc.max(wh.read_transactions().column(schema.EVENT_TIMESTAMP)).as_py()
    finally:
        wh.close()
    if newest is None:
        fail("the warehouse is empty: run `fraudops data generate` or pass --generate")
    hour = newest.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour + timedelta(hours=1)


def _ensure_data(
    cfg: Settings, rows: int, days: float, generate: bool | None, start: datetime | None = None
) -> dict[str, Any] | None:
    from fraudops.data.warehouse import open_warehouse

    wh = open_warehouse(cfg)
    try:
        present = wh.count_transactions()
    finally:
        wh.close()
    if generate is False or (generate is None and present > 0):
        if present == 0:
            fail("the warehouse is empty: drop --no-generate or run `fraudops data generate`")
        console().print(f"using the {present:,} transactions in the warehouse")
        return None
    from fraudops import pipeline

    with step(f"generating {rows:,} transactions over {days:g} days"):
        return pipeline.generate(rows=rows, days=days, start=start, settings=cfg)


def _print_run(result: DagRunResult) -> None:
    colour = "green" if result.succeeded else "red"
    tasks = ", ".join(f"{t}={s}" for t, s in result.states().items())
    console().print(
        f"[{colour}]{result.dag_id}: {result.state}[/] in {result.wall_s or 0:.0f} s "
        f"(tasks {result.task_seconds():.0f} s): {tasks}"
    )
    if not result.succeeded:
        console().print(f"  failed: {', '.join(result.failed_tasks()) or '?'}; log: {result.log_file}")


def _summary(cfg: Settings, runs: list[DagRunResult]) -> dict[str, Any]:
    training = next((r for r in runs if r.dag_id == TRAINING_DAG), None)
    out: dict[str, Any] = {"dag_runs": [r.to_dict() for r in runs]}
    if training is None:
        return out
    ret = training.returns
    evaluation = ret.get("evaluate") or {}
    out["data_version"] = (ret.get("snapshot") or {}).get("version")
    out["model_version"] = evaluation.get("model_version")
    out["run_id"] = evaluation.get("run_id")
    out["mlflow_run_url"] = evaluation.get("mlflow_run_url")
    out["metrics"] = evaluation.get("metrics")
    gate = ret.get("gate") or {}
    out["gate"] = {"passed": gate.get("passed"), "reason": gate.get("reason")} if gate else None
    out["bundle_path"] = (ret.get("export_bundle") or {}).get("bundle_path")
    registration = ret.get("register") or ret.get("gate_rejected") or {}
    out["promoted"] = bool(registration.get("promoted"))
    try:
        from fraudops.registry import current_aliases

        out["aliases"] = current_aliases(cfg)
    except Exception as exc:  # no registered model yet (training failed before registering)
        out["aliases"] = {}
        out["aliases_error"] = str(exc)
    return out


def run_lifecycle_dags(
    cfg: Settings,
    airflow: EmbeddedAirflow,
    *,
    rows: int,
    days: float,
    epochs: int,
    generate: bool | None,
    start: datetime | None = None,
) -> tuple[dict[str, Any], list[DagRunResult]]:
    """Initialize Airflow, make sure there is data, run materialization then training; summarize."""
    from fraudops.orchestration.policy import RETRIES_CAP_ENV
    from fraudops.orchestration.runs import run_dag_test

    started = time.perf_counter()
    info = _init(airflow)
    generated = _ensure_data(cfg, rows, days, generate, start)
    as_of = _reference_time(cfg)
    console().print(f"DAG runs as of {as_of.isoformat()} (the end of the data); Airflow home {airflow.home}")

    # A one-shot run: a failing task should fail now, not after minutes of retry delays.
    os.environ[RETRIES_CAP_ENV] = "0"
    runs = []
    with step(f"{MATERIALIZATION_DAG}: loading the online store (airflow dags test)"):
        runs.append(run_dag_test(airflow, MATERIALIZATION_DAG, as_of, conf={"full_history": True}))
    _print_run(runs[-1])
    if runs[-1].succeeded:
        conf = {"reason": "demo", "epochs": epochs, "lookback_days": max(1, round(days))}
        with step(f"{TRAINING_DAG}: validate, snapshot, features, train, gate, export, register (airflow dags test)"):
            runs.append(run_dag_test(airflow, TRAINING_DAG, as_of, conf=conf))
        _print_run(runs[-1])

    summary = _summary(cfg, runs)
    summary["generated"] = generated
    summary["as_of"] = as_of.isoformat()
    summary["airflow_home"] = info["airflow_home"]
    summary["login"] = info["login"]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print_training_summary(summary)
    return summary, runs


def print_training_summary(summary: dict[str, Any]) -> None:
    """Data version, model version, gate, aliases and bundle of a training run's summary."""
    gate = summary.get("gate") or {}
    if summary.get("model_version"):
        console().print(
            f"data version [bold]{summary['data_version']}[/], model [bold]v{summary['model_version']}[/] "
            f"(test AUC-ROC {((summary.get('metrics') or {}).get('test_auc_roc') or float('nan')):.4f}); "
            f"gate: {gate.get('reason')}"
        )
        console().print(f"aliases {summary.get('aliases')}; bundle {summary.get('bundle_path') or '-'}")
        if summary.get("mlflow_run_url"):
            console().print(f"MLflow run: {summary['mlflow_run_url']} (start the UI with `fraudops airflow up`)")


@app.command()
def demo(
    rows: int = typer.Option(200_000, "--rows", "-n", min=1_000, help="Transactions to generate when generating."),
    days: float = typer.Option(42.0, min=1.0, help="Days the generated data spans (and the training window)."),
    epochs: int = typer.Option(15, min=1, help="Maximum training epochs."),
    generate: bool | None = typer.Option(
        None, "--generate/--no-generate", help="Generate data first (default: only when the warehouse is empty)."
    ),
    output: str | None = typer.Option(None, "--output", "-o", help="Write the JSON summary here instead of stdout."),
) -> None:
    """Run the feature materialization and training DAGs with `airflow dags test`, then summarize."""
    cfg = settings()
    cfg.ensure_home()
    airflow = _embedded(cfg)
    summary, runs = run_lifecycle_dags(cfg, airflow, rows=rows, days=days, epochs=epochs, generate=generate)
    console().print(f"done in {summary['seconds']:.0f} s")
    emit_json(summary, output)
    if any(not r.succeeded for r in runs):
        raise typer.Exit(1)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], what: str, log_file: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2500:] if log_file.is_file() else ""
            fail(f"{what} exited with code {proc.returncode}; log {log_file}:\n{tail}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    fail(f"{what} did not answer at {url} within {timeout:.0f} s; log {log_file}")


def _start(argv: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], what: str) -> None:
    if proc.poll() is not None:
        return
    console().print(f"stopping {what}")
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@app.command()
def up(
    port: int = typer.Option(8080, help="Port of the Airflow API server and UI."),
    mlflow_port: int = typer.Option(5000, help="Port of the MLflow UI."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also start the MLflow UI."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the servers to answer."),
    detach: bool = typer.Option(False, help="Return once they answer, leaving them running."),
) -> None:
    """Start Airflow for operators (`airflow standalone`) and the MLflow UI; print where and how to log in."""
    from fraudops.orchestration.process import resolve_executable

    cfg = settings()
    cfg.ensure_home()
    airflow = _embedded(cfg, api_port=port, mlflow_port=mlflow_port)
    info = _init(airflow)
    env = airflow.env()
    logs = airflow.home / "logs"
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        af_log = logs / "standalone.log"
        af = _start(resolve_executable(["airflow", "standalone"]), env, af_log)
        procs.append(("Airflow", af))
        if mlflow:
            ml_log = logs / "mlflow-ui.log"
            argv = [
                *resolve_executable(["mlflow", "ui"]),
                "--backend-store-uri",
                cfg.tracking_uri,
                "--default-artifact-root",
                cfg.artifact_root,
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
            ]
            ml = _start(argv, env, ml_log)
            procs.append(("MLflow UI", ml))
            with step(f"starting the MLflow UI on {airflow.mlflow_url}"):
                _wait_http(f"{airflow.mlflow_url}/health", timeout, ml, "the MLflow UI", ml_log)
        with step(f"starting Airflow (API server, scheduler, DAG processor, triggerer) on {airflow.api_url}"):
            _wait_http(f"{airflow.api_url}/api/v2/monitor/health", timeout, af, "airflow standalone", af_log)
        login = info["login"]
        lines = [
            f"Airflow UI   {airflow.api_url}   login [bold]{login['user']}[/] / [bold]{login['password']}[/]",
            f"MLflow UI    {airflow.mlflow_url}" if mlflow else "MLflow UI    (not started)",
            f"DAGs         {MATERIALIZATION_DAG}, {TRAINING_DAG}, fraud_drift_monitoring, fraud_canary_rollout",
            f"Logs         {logs}",
        ]
        for line in lines:
            console().print(line)
        emit_json(
            {
                "airflow_ui": airflow.api_url,
                "mlflow_ui": airflow.mlflow_url if mlflow else None,
                "login": login,
                "airflow_home": str(airflow.home),
                "pids": {name: p.pid for name, p in procs},
            }
        )
        if detach:
            procs = []
            return
        console().print("press Ctrl-C to stop")
        while all(p.poll() is None for _, p in procs):
            time.sleep(1.0)
        gone = [name for name, p in procs if p.poll() is not None]
        fail(f"{', '.join(gone)} stopped; see the logs in {logs}")
    except KeyboardInterrupt:
        pass
    finally:
        for name, proc in reversed(procs):
            _stop(proc, name)
