"""
### Fraud features: materialize the online store

Every hour, loads the card-level features (`card_profile`) of the hour that just ended
from the offline store into the online store, where the predictor reads them by card.

* **Idempotent by interval.** Each run materializes exactly its data interval
  (`data_interval_start` .. `data_interval_end`, both read from the run, never "now").
  The online store keeps the newest row per card and does not rewrite an equal one, so
  re-running an interval changes nothing.
* **Bootstrap.** Trigger with `{"full_history": true}` to load everything up to the end
  of the interval (a fresh online store; `fraudops airflow demo` does this).
* **Hand-off.** A successful run updates the asset `fraud_online_features` with the
  interval it loaded; `fraud_training` records the newest event it trained after.

Tasks: `export_sources` (embedded default only: the warehouse as the offline store's
Parquet sources) → `apply_repository` (Feast definitions, idempotent) → `materialize`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from fraudops.orchestration import assets, policy
from fraudops.orchestration.context import data_interval

log = logging.getLogger("fraudops.dags.fraud_feature_materialization")


@dag(
    dag_id="fraud_feature_materialization",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=policy.START_DATE,
    catchup=False,
    max_active_runs=1,  # two runs would race on the online store's newest-row rule
    default_args=policy.default_args(),
    tags=policy.tags("features", "feast"),
    doc_md=__doc__,
    params={
        "full_history": Param(
            False,
            type="boolean",
            description="Materialize everything up to the end of the interval (bootstrap an empty online store).",
        ),
    },
)
def fraud_feature_materialization() -> None:
    @task(multiple_outputs=False)
    def export_sources() -> dict[str, Any]:
        """Export the warehouse as the local offline store's sources (nothing to do in production)."""
        from fraudops.features.store import export_sources as export
        from fraudops.settings import get_settings

        cfg = get_settings()
        cfg.ensure_home()
        # The sources mirror the whole warehouse: a window here would hide older rows
        # from later point-in-time joins.
        result = export(cfg)
        return {"exported": False} if result is None else {"exported": True, **result.to_dict()}

    @task(multiple_outputs=False)
    def apply_repository() -> dict[str, Any]:
        """Register the Feast definitions (idempotent: the same definitions change nothing)."""
        from fraudops.features.store import apply
        from fraudops.settings import get_settings

        return apply(get_settings()).to_dict()

    @task(outlets=[assets.ONLINE_FEATURES], multiple_outputs=False)
    def materialize() -> dict[str, Any]:
        """Load this run's data interval into the online store; announce it on the asset."""
        from fraudops.features.store import materialize as load
        from fraudops.settings import get_settings

        context = get_current_context()
        start, end = data_interval(context)
        full = bool(context["params"]["full_history"])
        result = load(get_settings(), None if full else start, end).to_dict()
        result["full_history"] = full
        log.info(
            "materialized %s .. %s: %s rows, %s cards",
            result["start"],
            result["end"],
            result.get("rows"),
            result.get("keys"),
        )
        context["outlet_events"][assets.ONLINE_FEATURES].extra = {
            "start": result["start"],
            "end": result["end"],
            "rows": result.get("rows"),
            "full_history": full,
        }
        return result

    export_sources() >> apply_repository() >> materialize()


fraud_feature_materialization()
