"""``fraudops demo``: the main job. The whole loop on the embedded default, in one run.

1. **Train through Airflow**: ``fraud_feature_materialization`` and ``fraud_training`` run
   with ``airflow dags test`` (SQLite metadata database): the first model passes the gate
   and becomes champion; its bundle is exported.
2. **Serve**: the predictor starts as its own process (``fraudops serve``) on the
   champion from the MLflow registry and scores a few transactions over HTTP.
3. **The market shifts**: the transactions of the week since the champion was trained
   come from a new market; they go through the predictor (today's prediction log) and
   into the warehouse, with labels that arrive within hours.
4. **Monitor**: ``fraud_drift_monitoring`` compares today with the champion's reference
   profile, writes the Evidently report and sends the alert to a local webhook receiver
   (the Airflow Connection ``fraudops_slack`` points at it); dataset drift triggers
   ``fraud_training``.
5. **Retrain**: the triggered training run (reason ``drift``) trains on the window that
   ends with today, new market included; a model that passes the gate becomes the challenger.
6. **Canary**: the predictor follows the alias and sends a share of the traffic to the
   challenger; after a short watch ``fraud_canary_rollout`` compares the two and
   promotes the challenger or rolls it back. The predictor follows again.

Every step prints its result; the JSON summary goes to ``FRAUDOPS_HOME/demo-summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fraudops.cli._common import console, emit_json, fail, settings, step

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops.demo import PredictorProcess
    from fraudops.orchestration.bootstrap import EmbeddedAirflow
    from fraudops.orchestration.runs import DagRunResult
    from fraudops.settings import Settings

DRIFT_DAG = "fraud_drift_monitoring"
TRAINING_DAG = "fraud_training"
CANARY_DAG = "fraud_canary_rollout"


def _header(n: int, title: str) -> None:
    console().rule(f"[bold]{n}. {title}")


def _midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _traffic(
    cfg: Settings, rows: int, start: datetime, *, scenario: str, seed: int, prefix: str, days: float = 1.0
) -> tuple[pa.Table, Path]:
    """Transactions from ``start`` on under ``scenario``, and their labels (written to a Parquet file).

    The labels arrive within hours (a demo cannot wait for chargebacks), so that the
    drift job and the canary can judge quality on the same day.
    """
    import pyarrow.parquet as pq

    from fraudops.data.generate import generate_transactions, simulate_labels

    table = generate_transactions(rows, seed=seed, scenario=scenario, start=start, days=days, id_prefix=prefix)
    labels_dir = cfg.home / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    path = labels_dir / f"{prefix.rstrip('-')}.parquet"
    pq.write_table(simulate_labels(table, seed=seed, mean_delay_days=0.05), path)
    return table, path


def _append_to_warehouse(cfg: Settings, table: pa.Table) -> int:
    from fraudops.data.warehouse import open_warehouse

    wh = open_warehouse(cfg)
    try:
        wh.write_transactions(table)
        return wh.count_transactions()
    finally:
        wh.close()


def _print_run(result: DagRunResult) -> None:
    from fraudops.cli.airflow import _print_run as print_run

    print_run(result)


def _score(predictor: PredictorProcess, table: pa.Table, what: str) -> dict[str, Any]:
    from fraudops.demo import score_table

    with step(f"scoring {table.num_rows:,} {what} through POST /predict/batch"):
        stats = score_table(predictor.url, table).to_dict()
    console().print(
        f"  {stats['rows']:,} scored in {stats['seconds']:.1f} s ({stats['rows_per_s'] or 0:,.0f} rows/s), "
        f"{stats['flagged']:,} flagged as fraud, {stats['errors']} failed requests; "
        f"variants {stats['variants']}, model versions {stats['model_versions']}"
    )
    if stats["errors"]:
        fail(f"the predictor refused {stats['errors']} requests; log {predictor.log_file}")
    return stats


def _wait_served(predictor: PredictorProcess, wanted: dict[str, str], timeout: float = 120.0) -> dict[str, str]:
    """Wait until the predictor serves ``wanted`` (it polls the registry; a reload hurries it)."""
    deadline = time.monotonic() + timeout
    predictor.reload()
    while True:
        served = predictor.versions()
        if served == wanted or time.monotonic() > deadline:
            return served
        time.sleep(1.0)


def _serve_step(cfg: Settings, summary: dict[str, Any], canary_share: float) -> PredictorProcess:
    from fraudops.demo import DemoError, PredictorProcess, score_examples

    _header(2, "Serve: the predictor on the champion, from the MLflow registry")
    predictor = PredictorProcess(
        log_file=cfg.home / "logs" / "predictor.log",
        env={
            "FRAUDOPS_SERVING_POLL_INTERVAL_S": "2",  # follow alias moves within seconds
            "FRAUDOPS_SERVING_LOG_FLUSH_INTERVAL_S": "1",
            "FRAUDOPS_CANARY__SHARE": str(canary_share),
        },
    )
    try:
        with step("starting the predictor (fraudops serve) and waiting for /ready"):
            predictor.start()
    except DemoError as exc:
        fail(str(exc))
    served = predictor.versions()
    console().print(f"predictor at {predictor.url}: serving {served} (log {predictor.log_file})")
    examples_table, _ = _traffic(cfg, 50, _midnight(datetime.now(UTC)), scenario="baseline", seed=7, prefix="examples-")
    examples = score_examples(predictor.url, examples_table, n=3)
    for ex in examples:
        console().print(
            f"  POST /predict {ex.get('transaction_id')}: probability {ex['probability']:.4f}, "
            f"decision {ex['decision']}, model {ex['model_name']} v{ex['model_version']} ({ex['variant']})"
        )
    summary["serve"] = {"url": predictor.url, "served": served, "examples": examples}
    return predictor


def _drift_step(
    cfg: Settings,
    airflow: EmbeddedAirflow,
    predictor: PredictorProcess,
    summary: dict[str, Any],
    drift_rows: int,
    scenario: str,
    shift_days: int,
) -> DagRunResult | None:
    from fraudops.demo import WebhookReceiver, wait_for_log
    from fraudops.orchestration.runs import queued_runs, run_dag_test

    today = _midnight(datetime.now(UTC))
    since = today - timedelta(days=shift_days - 1)
    _header(3, f"A new market: {drift_rows:,} transactions since {since.date()} ({scenario!r}) through the predictor")
    drifted, labels_path = _traffic(
        cfg, drift_rows, since, scenario=scenario, seed=11, prefix="drift-", days=float(shift_days)
    )
    stats = _score(predictor, drifted, f"{scenario} transactions")
    total = _append_to_warehouse(cfg, drifted)
    logged = wait_for_log(cfg.prediction_log_dir, today.date(), stats["rows"])
    console().print(
        f"  prediction log: {logged:,} rows for {today.date()}; the warehouse (the system of record) now holds "
        f"{total:,} transactions; labels in {labels_path}"
    )
    summary["drifted_traffic"] = {
        "scenario": scenario,
        "since": since.isoformat(),
        "scoring": stats,
        "logged": logged,
        "labels": str(labels_path),
    }

    _header(4, f"Monitor: {DRIFT_DAG} for {today.date()} (alerts go to a local webhook receiver)")
    with WebhookReceiver() as receiver:
        os.environ["AIRFLOW_CONN_FRAUDOPS_SLACK"] = json.dumps({"conn_type": "http", "password": receiver.url})
        with step(f"{DRIFT_DAG}: PSI per feature, score drift, quality, Evidently report, alert, retrain decision"):
            run = run_dag_test(airflow, DRIFT_DAG, today + timedelta(days=1), conf={"labels_path": str(labels_path)})
        os.environ.pop("AIRFLOW_CONN_FRAUDOPS_SLACK", None)
    _print_run(run)
    drift = run.returns.get("drift") or {}
    decision = run.returns.get("decide_retraining") or {}
    auc = drift.get("auc_roc")
    console().print(
        f"  {drift.get('n_rows')} rows of champion v{drift.get('model_version')}: {drift.get('n_drifted')}/"
        f"{drift.get('n_features')} features drifted (share {float(drift.get('drift_share') or 0):.0%}), "
        f"dataset drift {drift.get('dataset_drift')}, score PSI {float(drift.get('score_psi') or 0):.3f}, "
        f"AUC-ROC on the labelled rows {'-' if auc is None else f'{auc:.4f}'}"
    )
    console().print(f"  most drifted: {', '.join(drift.get('top_drifted') or [])}")
    day_dir = cfg.monitoring_dir / str(drift.get("date"))
    console().print(f"  results {day_dir}/ (summary.json, report.html; in the UI: {drift.get('report_url') or '-'})")
    for text in receiver.texts():
        console().print("  [yellow]alert received by the webhook:[/]")
        for line in text.splitlines()[:8]:
            console().print(f"    {line}")
    if not receiver.requests:
        console().print("  no alert was sent")
    console().print(f"  retraining: {decision.get('reason')}")
    summary["drift"] = {
        "run": run.to_dict(),
        "result": drift,
        "alerts": receiver.requests,
        "retraining": {k: v for k, v in decision.items() if k != "conf"},
    }
    if not run.succeeded:
        fail(f"{DRIFT_DAG} did not succeed: {run.failed_tasks()}; log {run.log_file}")
    queued = queued_runs(airflow.db_path, TRAINING_DAG)
    return queued[-1] if queued else None


def _retrain_step(cfg: Settings, airflow: EmbeddedAirflow, queued: DagRunResult, summary: dict[str, Any]) -> str | None:
    from fraudops.cli.airflow import _summary as training_summary
    from fraudops.cli.airflow import print_training_summary
    from fraudops.orchestration.runs import run_queued

    _header(5, f"Retrain: the {TRAINING_DAG} run that drift triggered (reason {queued.conf.get('reason')!r})")
    with step(f"{TRAINING_DAG} {queued.run_id}: validate, snapshot, features, train, gate, export, register"):
        run = run_queued(airflow, queued)
    _print_run(run)
    result = training_summary(cfg, [run])
    print_training_summary(result)
    summary["retrain"] = result
    if not run.succeeded:
        fail(f"the drift-triggered training failed: {run.failed_tasks()}; log {run.log_file}")
    aliases = result.get("aliases") or {}
    challenger = aliases.get("challenger")
    if challenger is None:
        console().print(f"  no challenger: {(result.get('gate') or {}).get('reason')}")
    return challenger


def _canary_step(
    cfg: Settings,
    airflow: EmbeddedAirflow,
    predictor: PredictorProcess,
    summary: dict[str, Any],
    challenger: str,
    canary_rows: int,
    scenario: str,
    watch_minutes: float,
) -> None:
    from fraudops.orchestration.runs import run_dag_test
    from fraudops.registry import current_aliases

    aliases = current_aliases(cfg)
    _header(6, f"Canary: v{challenger} takes its share of the traffic, then {CANARY_DAG} decides")
    with step("the predictor follows the challenger alias (registry poll + /admin/reload)"):
        served = _wait_served(predictor, {"champion": aliases["champion"], "challenger": challenger})
    console().print(f"  serving {served}, canary share {predictor.env.get('FRAUDOPS_CANARY__SHARE')} (sticky by card)")
    announced = datetime.now(UTC) - timedelta(seconds=1)
    # A whole UTC day of transactions, scored now: the same rows whatever the hour the demo
    # runs (a window of "the last 24 hours" once gave another canary decision at each hour).
    # Two days old, so that all its labels (arriving within hours) are in when the watch
    # ends, and precision and recall can decide.
    traffic, labels_path = _traffic(
        cfg, canary_rows, _midnight(announced) - timedelta(days=2), scenario=scenario, seed=13, prefix="canary-"
    )
    stats = _score(predictor, traffic, "transactions during the watch")
    watch_end = announced + timedelta(minutes=watch_minutes)
    wait_s = (watch_end - datetime.now(UTC)).total_seconds()
    if wait_s > 0:
        console().print(f"  the watch period ends at {watch_end.isoformat(timespec='seconds')} ({wait_s:.0f} s)")
    conf = {
        "model_version": challenger,
        "announced_at": announced.isoformat(),
        "watch_hours": watch_minutes / 60.0,
        "labels_path": str(labels_path),
    }
    with step(f"{CANARY_DAG}: watch, compare (errors, latency, scores, precision/recall), promote or roll back"):
        run = run_dag_test(airflow, CANARY_DAG, datetime.now(UTC), conf=conf)
    _print_run(run)
    compare = run.returns.get("compare") or {}
    for check in compare.get("checks") or []:
        mark = "[green]ok[/]  " if check.get("passed") else "[red]FAIL[/]"
        console().print(f"  {mark} {check.get('name')}: {check.get('detail')}")
    console().print(f"  decision: [bold]{compare.get('action')}[/]: {compare.get('reason')}")
    after = current_aliases(cfg)
    with step("the predictor follows the aliases again"):
        served_after = _wait_served(predictor, after)
    console().print(f"  aliases now {after}; the predictor serves {served_after}")
    summary["canary"] = {
        "run": run.to_dict(),
        "scoring": stats,
        "decision": compare,
        "aliases": after,
        "served": served_after,
    }
    if not run.succeeded:
        fail(f"{CANARY_DAG} did not succeed: {run.failed_tasks()}; log {run.log_file}")


def demo(
    rows: int = typer.Option(120_000, "--rows", "-n", min=10_000, help="Transactions of history to generate."),
    days: float = typer.Option(28.0, min=7.0, help="Days of history before the market shifts."),
    epochs: int = typer.Option(8, min=1, help="Maximum training epochs of each training run."),
    drift_rows: int = typer.Option(60_000, min=1_000, help="Transactions since the market shifted."),
    shift_days: int = typer.Option(7, min=1, help="Days since the market shifted (today included)."),
    canary_rows: int = typer.Option(12_000, min=1_000, help="Transactions sent during the canary watch."),
    scenario: str = typer.Option("new_market", help="Scenario after the shift (see `fraudops data generate`)."),
    canary_share: float = typer.Option(0.3, min=0.01, max=1.0, help="Share of traffic for the challenger."),
    watch_minutes: float = typer.Option(1.0, min=0.0, help="Canary watch period (24 h in production)."),
    fresh: bool = typer.Option(
        True, "--fresh/--keep", help="Start from an empty FRAUDOPS_HOME (only one that the demo created)."
    ),
) -> None:
    """The main job: train through Airflow, serve, drift, alert, retrain, canary and roll out."""
    from fraudops.cli.airflow import _embedded, run_lifecycle_dags
    from fraudops.demo import DemoError, prepare_home
    from fraudops.settings import get_settings

    started = time.perf_counter()
    cfg = settings()
    if cfg.profile != "local":
        fail("`fraudops demo` runs on the embedded default (FRAUDOPS_PROFILE=local)")
    try:
        prepare_home(cfg.home, fresh=fresh)
    except DemoError as exc:
        fail(str(exc))
    get_settings.cache_clear()
    cfg = settings()
    cfg.ensure_home()
    summary: dict[str, Any] = {"home": str(cfg.home)}
    summary_path = cfg.home / "demo-summary.json"
    airflow = _embedded(cfg)
    shifted = _midnight(datetime.now(UTC)) - timedelta(days=shift_days - 1)

    _header(1, f"Train through Airflow: {days:g} days of history up to {shifted.date()}")
    first, runs = run_lifecycle_dags(
        cfg, airflow, rows=rows, days=days, epochs=epochs, generate=True, start=shifted - timedelta(days=days)
    )
    summary["train"] = first
    if any(not r.succeeded for r in runs) or not (first.get("aliases") or {}).get("champion"):
        emit_json(summary, str(summary_path))
        fail(f"the first training did not produce a champion; see {summary_path}")

    predictor = _serve_step(cfg, summary, canary_share)
    try:
        queued = _drift_step(cfg, airflow, predictor, summary, drift_rows, scenario, shift_days)
        if queued is None:
            console().print("drift did not trigger retraining: the loop ends here")
        else:
            challenger = _retrain_step(cfg, airflow, queued, summary)
            if challenger is not None:
                _canary_step(cfg, airflow, predictor, summary, challenger, canary_rows, scenario, watch_minutes)
    except DemoError as exc:
        fail(str(exc))
    finally:
        with step("stopping the predictor (its prediction log is flushed)"):
            code = predictor.stop()
        summary["predictor_exit_code"] = code
        summary["seconds"] = round(time.perf_counter() - started, 1)
        emit_json(summary, str(summary_path))

    console().rule("[bold]Done")
    login = first.get("login") or {}
    console().print(f"the whole loop took {summary['seconds']:.0f} s; summary {summary_path}")
    console().print(
        f"look around: `fraudops airflow up` (Airflow UI, login {login.get('user')} / {login.get('password')}, "
        "and the MLflow UI), `fraudops registry history`, reports under "
        f"{cfg.monitoring_dir}"
    )
