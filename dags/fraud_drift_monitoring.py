"""
### Fraud drift monitoring

Every day, after the UTC day ends: what the predictor saw that day (champion traffic in
the prediction log) against the champion's reference profile.

`drift` → `alert_delivery` and `decide_retraining` → `should_retrain` →
`trigger_training` → `record_trigger`

* **drift**: PSI per feature (drift at 0.2), dataset drift (more than 30 % of the features),
  score drift, and, for the rows whose labels have arrived, target drift and precision,
  recall and AUC-ROC by day. Writes `summary.json` and the Evidently report under
  `FRAUDOPS_HOME/monitoring/<day>/`; the task's **Drift report** button opens the report.
  Re-running a day rewrites that day's results and nothing else.
* **alert_delivery**: when drift passes the alert level (50 % of the features) or quality
  falls, the Slack alert (Airflow Connection `fraudops_slack`) went out from `drift`;
  this task fails, visibly, when it did not get through, and re-sends on retry. The drift
  results are saved whatever happens to the alert.
* **decide_retraining**: dataset drift triggers `fraud_training` (reason `drift`, the
  drift summary and the window in its run configuration), unless a training run is
  under way or drift triggered one within the cooldown (24 h by default). The time of
  the last trigger is kept in the state of the asset `fraud_retrain_requests`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from fraudops.orchestration import assets, policy
from fraudops.orchestration.context import data_interval
from fraudops.orchestration.monitoring import DriftJobOperator

log = logging.getLogger("fraudops.dags.fraud_drift_monitoring")

TRAINING_DAG = "fraud_training"


@dag(
    dag_id="fraud_drift_monitoring",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=policy.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=policy.default_args(),
    tags=policy.tags("monitoring", "drift", "evidently"),
    doc_md=__doc__,
    params={
        "labels_path": Param(
            None,
            type=["null", "string"],
            description="Late labels (Parquet file or folder); default: the Variable fraudops_labels_path.",
        ),
    },
)
def fraud_drift_monitoring() -> None:
    drift = DriftJobOperator(
        task_id="drift",
        labels_path="{{ params.labels_path or '' }}",
        execution_timeout=timedelta(hours=2),
        doc_md="The day's drift figures and Evidently report (see the **Drift report** button).",
    )

    @task(multiple_outputs=False)
    def alert_delivery(result: dict[str, Any]) -> dict[str, Any]:
        """Fail visibly when an alert was due and did not get through; re-send on retry."""
        from fraudops.monitoring.job import read_summary, send_drift_alert
        from fraudops.orchestration.monitoring import slack_webhook_url
        from fraudops.settings import get_settings

        if not result["alert_reasons"]:
            return {"alert": False}
        if result["alert_delivered"]:
            log.info("alert delivered: %s", "; ".join(result["alert_reasons"]))
            return {"alert": True, "delivered": True}
        webhook = slack_webhook_url()
        if webhook is None:
            log.warning("alert due but no Slack connection: %s", "; ".join(result["alert_reasons"]))
            return {"alert": True, "delivered": False, "reason": "no fraudops_slack connection"}
        context = get_current_context()
        if context["ti"].try_number > 1:  # the drift task already tried once; this is a retry
            start, _ = data_interval(context)
            summary = read_summary(get_settings().monitoring_dir, start.date())
            record = send_drift_alert(summary, webhook, report_url=result.get("report_url"))
            if record.get("delivered"):
                return {"alert": True, "delivered": True, "resent": True}
            error = record.get("error")
        else:
            error = result["alert_error"]
        raise RuntimeError(f"the drift alert did not reach Slack ({error}); the drift results are saved")

    @task(inlets=[assets.RETRAIN_REQUESTS], multiple_outputs=True)
    def decide_retraining(result: dict[str, Any]) -> dict[str, Any]:
        """Dataset drift -> retrain, unless one runs already or the cooldown holds."""
        from fraudops.monitoring.job import read_summary
        from fraudops.monitoring.policy import decide_retraining as decide
        from fraudops.orchestration.context import utc_datetime
        from fraudops.settings import get_settings

        cfg = get_settings()
        context = get_current_context()
        start, end = data_interval(context)
        summary = read_summary(cfg.monitoring_dir, start.date())
        last = context["asset_state_store"][assets.RETRAIN_REQUESTS].get("last_triggered_at")
        running = context["ti"].get_dr_count(dag_id=TRAINING_DAG, states=["queued", "running"])
        decision = decide(
            summary,
            now=end,
            last_triggered_at=utc_datetime(last) if last else None,
            training_running=running > 0,
            cooldown_hours=cfg.drift.retrain_cooldown_hours,
        ).to_dict()
        if decision["trigger"]:
            # Train on the data up to the end of the drifted day.
            decision["conf"] = {**decision["conf"], "window_end": end.isoformat()}
        (log.warning if decision["trigger"] else log.info)("retraining: %s", decision["reason"])
        return {**decision, "decided_at": end.isoformat()}

    @task.short_circuit
    def should_retrain(trigger: bool) -> bool:
        """Go on to trigger training only when the decision says so."""
        return bool(trigger)

    @task(outlets=[assets.RETRAIN_REQUESTS], multiple_outputs=False)
    def record_trigger(decided_at: str, reason: str) -> dict[str, Any]:
        """Keep the time of this trigger for the cooldown (the asset's state)."""
        context = get_current_context()
        context["asset_state_store"][assets.RETRAIN_REQUESTS].set("last_triggered_at", decided_at)
        context["outlet_events"][assets.RETRAIN_REQUESTS].extra = {"triggered_at": decided_at, "reason": reason}
        return {"last_triggered_at": decided_at, "reason": reason}

    alert_delivery(drift.output)
    decision = decide_retraining(drift.output)
    trigger_training = TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id=TRAINING_DAG,
        conf=decision["conf"],
        wait_for_completion=False,
        doc_md="Starts `fraud_training` with reason `drift` and the drift summary in its run configuration.",
    )
    (
        should_retrain(decision["trigger"])
        >> trigger_training
        >> record_trigger(decision["decided_at"], decision["reason"])
    )


fraud_drift_monitoring()
