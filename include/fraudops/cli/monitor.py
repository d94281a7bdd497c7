"""``fraudops monitor ...``: daily drift, retraining decision, canary decision, simulated traffic."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import typer

from fraudops.cli._common import console, emit_json, fail, parse_time, settings, step

app = typer.Typer(
    help="Monitoring: drift against the reference profile, alerts, retraining and canary decisions.",
    no_args_is_help=True,
)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"not an ISO date (YYYY-MM-DD): {value!r}")


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    from fraudops.monitoring.summary import headline

    drift = summary.get("drift") or {}
    return {
        **headline(summary),
        "dataset_drift": drift.get("dataset_drift", False),
        "top_drifted": drift.get("top_drifted", [])[:5],
        "target_drift": (summary.get("target") or {}).get("drifted"),
        "alert_reasons": summary.get("alert_reasons", []),
        "alert": summary.get("alert"),
        "report": (summary.get("report") or {}).get("path"),
        "summary_path": summary.get("summary_path"),
    }


@app.command()
def drift(
    day: str = typer.Option(..., "--date", help="UTC day to check (YYYY-MM-DD)."),
    profile: str | None = typer.Option(None, help="Reference profile (default: the champion bundle's)."),
    labels: str | None = typer.Option(None, help="Late labels (Parquet file or directory)."),
    log_root: str | None = typer.Option(None, help="Prediction log root (default: FRAUDOPS_HOME/prediction_log)."),
    report: bool = typer.Option(True, help="Write the Evidently HTML report (about 30 s)."),
    report_rows: int = typer.Option(5_000, min=100, help="Rows sampled into the report."),
    exclude: str | None = typer.Option(
        None, help="Comma-separated features not counted in the drift share (default: day_of_week,is_weekend)."
    ),
    webhook_url: str | None = typer.Option(
        None, envvar="FRAUDOPS_SLACK_WEBHOOK_URL", help="Slack webhook for alerts (secret: prefer the env var)."
    ),
    report_url: str | None = typer.Option(None, help="Link to the report put in the alert."),
    pushgateway_url: str | None = typer.Option(None, envvar="FRAUDOPS_PUSHGATEWAY_URL", help="Push the gauges here."),
    output: str | None = typer.Option(None, "--output", "-o", help="Write the brief JSON here instead of stdout."),
) -> None:
    """Drift of one day of champion traffic; results under FRAUDOPS_HOME/monitoring/<date>/."""
    from fraudops.monitoring.job import DAILY_EXCLUDED_FEATURES, DriftJobError, run_drift_job
    from fraudops.monitoring.profile import ProfileError
    from fraudops.monitoring.quality import LabelsError

    the_day = _day(day)
    cfg = settings()
    cfg.ensure_home()
    try:
        with step(f"drift of {the_day.isoformat()}"):
            summary = run_drift_job(
                the_day,
                settings=cfg,
                profile=profile,
                log_root=log_root,
                labels=labels,
                report=report,
                report_rows=report_rows,
                exclude=tuple(f.strip() for f in exclude.split(",") if f.strip())
                if exclude
                else DAILY_EXCLUDED_FEATURES,
                webhook_url=webhook_url,
                report_url=report_url,
                pushgateway_url=pushgateway_url,
            )
    except (DriftJobError, ProfileError, LabelsError) as exc:
        fail(str(exc))
    brief = _brief(summary)
    if summary["status"] == "no_data":
        console().print(f"[yellow]no champion traffic logged on {the_day.isoformat()}[/]")
    else:
        colour = "red" if brief["dataset_drift"] else "green"
        console().print(
            f"[{colour}]{brief['n_drifted']}/{brief['n_features']} features drifted "
            f"({brief['drift_share']:.0%}), dataset drift: {brief['dataset_drift']}[/]; "
            f"score PSI {brief['score_psi']:.3f}; {summary['n_rows']:,} rows"
        )
        for reason in brief["alert_reasons"]:
            console().print(f"[bold red]alert:[/] {reason}")
        alert = summary.get("alert")
        if alert and not alert["delivered"]:
            console().print(f"[bold red]alert not delivered:[/] {alert['error']} (results are saved)")
    emit_json(brief, output)


@app.command("retrain-decision")
def retrain_decision(
    day: str = typer.Option(..., "--date", help="The day whose drift results decide."),
    last_triggered: str | None = typer.Option(None, help="When drift last triggered training (ISO, UTC)."),
    training_running: bool = typer.Option(False, help="A training run is under way."),
    now: str | None = typer.Option(None, help="Reference time (default: the end of the day)."),
) -> None:
    """Should the day's drift trigger retraining? (cooldown and one-at-a-time respected)"""
    from fraudops.monitoring.job import read_summary
    from fraudops.monitoring.policy import decide_retraining

    the_day = _day(day)
    cfg = settings()
    try:
        summary = read_summary(cfg.monitoring_dir, the_day)
    except FileNotFoundError as exc:
        fail(f"{exc}; run `fraudops monitor drift --date {the_day.isoformat()}` first")
    reference = parse_time(now or (the_day + timedelta(days=1)).isoformat())
    if reference is None:
        fail("no reference time")
    decision = decide_retraining(
        summary,
        now=reference,
        last_triggered_at=parse_time(last_triggered),
        training_running=training_running,
        cooldown_hours=cfg.drift.retrain_cooldown_hours,
    )
    console().print(("[yellow]trigger[/]: " if decision.trigger else "no trigger: ") + decision.reason)
    emit_json(decision.to_dict())


@app.command()
def canary(
    start: str = typer.Option(..., help="Start of the watch period (ISO, UTC)."),
    end: str = typer.Option(..., help="End of the watch period (ISO, UTC)."),
    labels: str | None = typer.Option(None, help="Late labels (Parquet file or directory)."),
    log_root: str | None = typer.Option(None, help="Prediction log root (default: FRAUDOPS_HOME/prediction_log)."),
    champion_errors: int = typer.Option(0, min=0, help="Failed champion requests (fraudops_errors_total)."),
    challenger_errors: int = typer.Option(0, min=0, help="Failed challenger requests (fraudops_errors_total)."),
    watch_elapsed_hours: float | None = typer.Option(None, min=0, help="Hours watched (default: end - start)."),
) -> None:
    """Compare challenger with champion on their logged traffic: promote, rollback or wait."""
    from fraudops.monitoring import predlog
    from fraudops.monitoring.policy import CanaryPolicy, decide_canary, variant_stats
    from fraudops.monitoring.quality import LabelsError, read_labels

    cfg = settings()
    t0, t1 = parse_time(start), parse_time(end)
    if t0 is None or t1 is None or t1 <= t0:
        fail(f"--end {end} is not after --start {start}")
    columns = [
        predlog.TS,
        predlog.VARIANT,
        predlog.MODEL_VERSION,
        predlog.PROBABILITY,
        predlog.DECISION,
        predlog.LATENCY_MS,
        "transaction_id",
    ]
    try:
        log = predlog.read_prediction_log(
            log_root or cfg.prediction_log_root, t0, t1, variants=("champion", "challenger"), columns=columns
        )
        known = read_labels(labels, as_of=t1) if labels else None
    except (predlog.PredictionLogError, LabelsError) as exc:
        fail(str(exc))
    elapsed = watch_elapsed_hours if watch_elapsed_hours is not None else (t1 - t0).total_seconds() / 3600
    decision = decide_canary(
        variant_stats(log, "champion", n_errors=champion_errors, labels=known),
        variant_stats(log, "challenger", n_errors=challenger_errors, labels=known),
        watch_elapsed_hours=elapsed,
        policy=CanaryPolicy.from_settings(cfg),
    )
    colour = {"promote": "green", "rollback": "red", "wait": "yellow"}[decision.action]
    console().print(f"[{colour}]{decision.action}[/]: {decision.reason}")
    emit_json(decision.to_dict())


@app.command()
def simulate(
    day: str = typer.Option(..., "--date", help="UTC day of the simulated traffic."),
    rows: int = typer.Option(20_000, min=1, help="Champion rows to log."),
    scenario: str = typer.Option(
        "baseline", help="baseline | amount_inflation | merchant_mix | fraud_surge | new_market"
    ),
    model_version: str = typer.Option("1", help="Version written in the log records."),
    challenger_rows: int = typer.Option(0, min=0, help="Also log this many challenger rows (version + 1)."),
    profile_out: str | None = typer.Option(None, help="Also write the matching reference profile here."),
    labels_out: str | None = typer.Option(None, help="Also write the day's late labels here (Parquet)."),
) -> None:
    """Log a day of generated traffic scored by a stand-in model (to try the monitor without a predictor)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fraudops.data.generate import SCENARIOS, simulate_labels
    from fraudops.monitoring import predlog
    from fraudops.monitoring.profile import save_profile
    from fraudops.monitoring.simulate import reference_setup, simulate_day

    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    the_day = _day(day)
    cfg = settings()
    cfg.ensure_home()
    with step("fitting the stand-in model on baseline data"):
        profile, scorer, threshold = reference_setup(seed=cfg.seed)
    with step(f"logging {rows:,} rows of {scenario} traffic on {the_day.isoformat()}"):
        records, tx = simulate_day(
            the_day, rows, scorer, scenario=scenario, seed=cfg.seed, threshold=threshold, model_version=model_version
        )
        written = predlog.write_log_batch(records, cfg.prediction_log_dir)
        txs = [tx]
        if challenger_rows:
            chall, chall_tx = simulate_day(
                the_day,
                challenger_rows,
                scorer,
                scenario=scenario,
                seed=cfg.seed,
                threshold=threshold,
                variant="challenger",
                model_version=str(_next_version(model_version)),
                id_prefix=f"chall-{the_day}-",
            )
            written += predlog.write_log_batch(chall, cfg.prediction_log_dir)
            txs.append(chall_tx)
    if profile_out:
        save_profile(profile, profile_out)
    if labels_out:
        Path(labels_out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([simulate_labels(t, seed=cfg.seed) for t in txs]), labels_out)
    emit_json(
        {
            "date": the_day.isoformat(),
            "scenario": scenario,
            "rows": rows,
            "challenger_rows": challenger_rows,
            "files": written,
            "profile": str(profile_out) if profile_out else None,
            "labels": str(labels_out) if labels_out else None,
            "threshold": threshold,
        }
    )


def _next_version(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else f"{version}-next"
