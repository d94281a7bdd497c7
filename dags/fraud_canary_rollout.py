"""
### Fraud canary rollout

Follows the asset `fraud_model_challenger`: each new challenger that `fraud_training`
announces takes its canary share of the traffic (5 % by default, in the predictor), is
watched, then replaces the champion or is rolled back, without anyone having to remember.

`announcement` → `watch` → `compare` → `route` → (`human_approval` →)
`promote_challenger` or `rollback_challenger`

* **announcement**: which version, since when; a version that became champion directly
  (the first model) or that is no longer the challenger has nothing to watch.
* **watch**: waits, without holding a worker, for the watch period (24 h by default,
  `FRAUDOPS_CANARY__WATCH_HOURS`; minutes in a demo via the `watch_hours` param).
* **compare**: challenger against champion on their logged traffic over the watch
  period: error rate, latency, score distribution, and precision and recall where labels
  have arrived. The decision and every check are its return value.
* **route**: promotion goes through `human_approval` when `require_approval` is set (the
  operator answers in the UI; no answer within a day rolls back); a rollback never waits.
* **promote_challenger** / **rollback_challenger**: the alias move, recorded with this
  run as the actor and the comparison as the reason. A newer challenger announced in the
  meantime is left alone.

Trigger by hand with `{"model_version": "2"}` (and optionally `announced_at`,
`watch_hours`) to roll out a challenger set outside `fraud_training`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task

from fraudops.orchestration import assets, policy

log = logging.getLogger("fraudops.dags.fraud_canary_rollout")

MOVE_TRIGGER_RULE = "none_failed_min_one_success"  # after `route` or after `human_approval`


@dag(
    dag_id="fraud_canary_rollout",
    schedule=[assets.CHALLENGER],
    start_date=policy.START_DATE,
    catchup=False,
    max_active_runs=1,  # one canary at a time: each moves the same aliases
    default_args=policy.default_args(),
    tags=policy.tags("rollout", "canary", "registry"),
    doc_md=__doc__,
    params={
        "model_version": Param(None, type=["null", "string"], description="Challenger to watch (manual runs)."),
        "announced_at": Param(None, type=["null", "string"], description="Start of the watch (ISO 8601, UTC)."),
        "watch_hours": Param(
            None, type=["null", "number"], minimum=0, description="Watch period; default: the canary settings."
        ),
        "require_approval": Param(False, type="boolean", description="Ask an operator before promoting."),
        "labels_path": Param(None, type=["null", "string"], description="Late labels (Parquet file or folder)."),
    },
)
def fraud_canary_rollout() -> None:
    @task(multiple_outputs=False)
    def announcement() -> dict[str, Any]:
        """The challenger to watch and when its watch started (from the asset event or the params)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from fraudops.orchestration.context import utc_datetime
        from fraudops.registry import CHALLENGER, current_aliases
        from fraudops.settings import get_settings

        context = get_current_context()
        params = context["params"]
        events = context["triggering_asset_events"].get(assets.CHALLENGER, []) if not params["model_version"] else []
        extra: dict[str, Any] = dict(events[-1].extra) if len(events) else {}
        version = params["model_version"] or extra.get("model_version")
        if not version:
            raise ValueError("no challenger: trigger with {'model_version': ...} or from fraud_training's announcement")
        if extra.get("alias") == "champion":
            raise AirflowSkipException(f"v{version} became champion directly (no champion before): nothing to watch")
        current = current_aliases().get(CHALLENGER)
        if current != str(version):
            raise AirflowSkipException(f"v{version} is no longer the challenger (now {current}): nothing to watch")
        started = params["announced_at"] or extra.get("announced_at") or (events[-1].timestamp if len(events) else None)
        announced = utc_datetime(started) if started else datetime.now(UTC)
        hours = params["watch_hours"]
        watch = float(hours) if hours is not None else get_settings().canary.watch_hours
        until = announced + timedelta(hours=watch)
        log.info("watching challenger v%s from %s for %.2f h (until %s)", version, announced, watch, until)
        return {
            "model_version": str(version),
            "announced_at": announced.isoformat(),
            "watch_hours": watch,
            "watch_until": until.isoformat(),
        }

    @task.sensor(poke_interval=60, timeout=7 * 24 * 3600, mode="reschedule")
    def watch(canary: dict[str, Any]) -> PokeReturnValue:
        """Done when the watch period is over (rescheduled in between: no worker is held)."""
        from fraudops.orchestration.context import utc_datetime

        left = (utc_datetime(canary["watch_until"]) - datetime.now(UTC)).total_seconds()
        if left > 0:
            log.info("watch period: %.0f s left", left)
        return PokeReturnValue(is_done=left <= 0, xcom_value=canary)

    @task(multiple_outputs=False)
    def compare(canary: dict[str, Any]) -> dict[str, Any]:
        """Challenger against champion on their logged traffic over the watch period."""
        from dataclasses import replace
        from pathlib import Path

        from fraudops.monitoring import predlog
        from fraudops.monitoring.policy import CanaryPolicy, decide_canary, variant_stats
        from fraudops.monitoring.quality import read_labels
        from fraudops.orchestration.context import utc_datetime
        from fraudops.settings import get_settings

        cfg = get_settings()
        start, end = utc_datetime(canary["announced_at"]), utc_datetime(canary["watch_until"])
        if end <= start:  # a zero watch period (demo): judge the traffic logged so far
            end = max(datetime.now(UTC), start + timedelta(seconds=1))
        columns = [predlog.TS, predlog.VARIANT, predlog.MODEL_VERSION, predlog.PROBABILITY, predlog.DECISION]
        columns += [predlog.LATENCY_MS, "transaction_id"]
        traffic = predlog.read_prediction_log(
            cfg.prediction_log_root, start, end, variants=("champion", "challenger"), columns=columns
        )
        labels_path = get_current_context()["params"]["labels_path"]
        labels = read_labels(labels_path, as_of=end) if labels_path and Path(labels_path).exists() else None
        decision = decide_canary(
            variant_stats(traffic, "champion", labels=labels),
            variant_stats(traffic, "challenger", labels=labels),
            watch_elapsed_hours=canary["watch_hours"],
            # The watch period of this run (the params may shorten the configured one).
            policy=replace(CanaryPolicy.from_settings(cfg), watch_hours=canary["watch_hours"]),
        ).to_dict()
        (log.info if decision["action"] == "promote" else log.warning)("%s: %s", decision["action"], decision["reason"])
        for check in decision["checks"]:
            log.info("  %s %s: %s", "ok  " if check["passed"] else "FAIL", check["name"], check["detail"])
        return {**decision, "model_version": canary["model_version"]}

    @task.branch
    def route(decision: dict[str, Any]) -> str:
        """Promotion (through approval when asked); anything else rolls back."""
        if decision["action"] == "promote":
            return "human_approval" if get_current_context()["params"]["require_approval"] else "promote_challenger"
        return "rollback_challenger"

    human_approval = HITLBranchOperator(
        task_id="human_approval",
        subject="Promote challenger v{{ ti.xcom_pull(task_ids='compare')['model_version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='compare')['reason'] }}",
        options=["Promote", "Roll back"],
        options_mapping={"Promote": "promote_challenger", "Roll back": "rollback_challenger"},
        defaults="Roll back",  # no answer within the timeout: the safe move
        response_timeout=timedelta(hours=24),
        doc_md="An operator confirms the promotion in the UI (Required actions).",
    )

    def _actor() -> str:
        context = get_current_context()
        return f"airflow:{context['dag'].dag_id}/{context['run_id']}"

    @task(trigger_rule=MOVE_TRIGGER_RULE, multiple_outputs=False)
    def promote_challenger(decision: dict[str, Any]) -> dict[str, Any]:
        """The challenger becomes champion; the challenger alias goes."""
        from fraudops.registry import promote_challenger_to_champion

        change = promote_challenger_to_champion(
            f"canary passed: {decision['reason']}", _actor(), expected_version=decision["model_version"]
        ).to_dict()
        log.info("aliases now %s", change["aliases_after"])
        return change

    @task(trigger_rule=MOVE_TRIGGER_RULE, multiple_outputs=False)
    def rollback_challenger(decision: dict[str, Any]) -> dict[str, Any]:
        """The challenger alias is removed; the champion keeps all the traffic."""
        from fraudops.registry import reject_challenger

        change = reject_challenger(
            f"canary failed: {decision['reason']}", _actor(), expected_version=decision["model_version"]
        ).to_dict()
        log.warning("challenger v%s rolled back; aliases now %s", decision["model_version"], change["aliases_after"])
        return change

    decision = compare(watch(announcement()))
    path = route(decision)
    promote, rollback = promote_challenger(decision), rollback_challenger(decision)
    path >> [human_approval, promote, rollback]
    human_approval >> [promote, rollback]


fraud_canary_rollout()
