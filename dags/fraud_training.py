"""
### Fraud model training

Weekly (Mondays 03:00 UTC), and whenever an operator or another DAG triggers it with a
`reason` in the run configuration (`fraud_drift_monitoring` does, with its drift summary).

`validate` → `snapshot` → `training_set` → `train` → `evaluate` → `gate` →
(`export_bundle` → `register` → `announce_challenger`) or `gate_rejected`

* **validate**: the Great Expectations suite on the training window (`lookback_days` up
  to the run's logical date, or `window_end`). A failed gate fails this task at once (no
  retry) and nothing downstream runs; the failed expectations are in its log.
* **snapshot**: the window as a DVC-versioned snapshot; its hash is the data version.
* **training_set**: point-in-time-correct features from Feast for the snapshot's rows.
* **train**: `fraudops train` through the runtime switch: a local process on the
  embedded default, a GPU pod (`KubernetesPodOperator`) in production. Its
  **MLflow run** button opens the run.
* **evaluate**: the registered version's test metrics and lineage, read back from MLflow.
* **gate**: test AUC-ROC against the floor and the champion. A rejection is a normal
  outcome: the run succeeds, `gate_rejected` returns the reason, no alias moves.
* **export_bundle**: ONNX export, parity against PyTorch, bundle checked and published.
  It runs before any alias moves, so a failed export leaves the aliases as they were.
* **register**: the gate again, inside the registry lock, then the alias move
  (`challenger`, or `champion` when there is none yet or `skip_canary` is set),
  recorded with this run as the actor and the `reason` of the run.
* **announce_challenger**: an event on the asset `fraud_model_challenger`, which
  `fraud_canary_rollout` follows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from fraudops.orchestration import assets, policy
from fraudops.orchestration.context import run_time, utc_datetime
from fraudops.orchestration.runtime import (
    DATA_VERSION_TEMPLATE,
    TRAINING_EXTRA_ARGS,
    TRAINING_SET_TEMPLATE,
    training_task,
)

log = logging.getLogger("fraudops.dags.fraud_training")


def _training_window(context: Any) -> tuple[datetime, datetime]:
    """``[end - lookback_days, end)``; ``end`` from the params, else the run's own time."""
    params = context["params"]
    end = utc_datetime(params["window_end"]) if params.get("window_end") else run_time(context)
    return end - timedelta(days=int(params["lookback_days"])), end


@dag(
    dag_id="fraud_training",
    schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
    start_date=policy.START_DATE,
    catchup=False,
    max_active_runs=1,  # one training at a time: runs compete for the same aliases
    default_args=policy.default_args(),
    tags=policy.tags("training", "mlflow", "registry"),
    doc_md=__doc__,
    params={
        "reason": Param(
            "scheduled", type="string", minLength=1, description="Why this run: recorded with the alias move."
        ),
        "lookback_days": Param(42, type="integer", minimum=1, maximum=730, description="Days of data to train on."),
        "window_end": Param(
            None,
            type=["null", "string"],
            description="End of the training window (ISO 8601, UTC); default: the run's logical date.",
        ),
        "epochs": Param(15, type="integer", minimum=1, maximum=500, description="Maximum training epochs."),
        "skip_canary": Param(False, type="boolean", description="Make a passing model champion at once."),
        "triggered_by": Param(None, type=["null", "string"], description="The DAG that triggered this run."),
        "reason_text": Param(None, type=["null", "string"], description="Details of the reason (drift)."),
        "drift_summary": Param(None, type=["null", "object"], description="Drift figures that triggered this run."),
    },
)
def fraud_training() -> None:
    @task(multiple_outputs=False)
    def validate() -> dict[str, Any]:
        """Run the data-validation gate on the training window; fail at once when it fails."""
        from airflow.sdk.exceptions import AirflowFailException

        from fraudops import pipeline
        from fraudops.data.validation import ValidationFailed

        context = get_current_context()
        params = context["params"]
        start, end = _training_window(context)
        log.info(
            "training run: reason %r%s; window %s .. %s",
            params["reason"],
            f" ({params['reason_text']})" if params.get("reason_text") else "",
            start.isoformat(),
            end.isoformat(),
        )
        try:
            report = pipeline.validate(start=start, end=end)
        except ValidationFailed as exc:
            # A retry would read the same data: fail now, and say what failed.
            raise AirflowFailException(f"data validation failed, nothing downstream runs: {exc}") from exc
        return {"start": start.isoformat(), "end": end.isoformat(), "reason": params["reason"], **report}

    @task(multiple_outputs=False)
    def snapshot(window: dict[str, Any]) -> dict[str, Any]:
        """Version the validated window with DVC: the returned ``version`` is the data version."""
        from fraudops import pipeline

        start, end = utc_datetime(window["start"]), utc_datetime(window["end"])
        info = pipeline.snapshot(start=start, end=end)
        log.info("data version %s: %s rows", info["version"], info["rows"])
        return info

    @task(inlets=[assets.ONLINE_FEATURES], multiple_outputs=False)
    def training_set(snap: dict[str, Any]) -> dict[str, Any]:
        """Join the features of the snapshot's rows as of each row's time (Feast)."""
        import pyarrow.parquet as pq

        from fraudops.features import store
        from fraudops.settings import get_settings

        cfg = get_settings()
        store.export_sources(cfg)  # local offline store only; a no-op in production
        store.apply(cfg)
        entity = pq.read_table(snap["path"], columns=list(store.IDENTITY_COLUMNS))
        table = store.training_set(cfg, entity)
        path = store.write_training_set(table, cfg.data_dir / "training_sets" / f"{snap['version']}.parquet")
        events = get_current_context()["inlet_events"][assets.ONLINE_FEATURES]
        latest = events[-1].extra if len(events) else None
        fraud = int(table.column("is_fraud").to_numpy().sum())
        log.info("training set %s: %d rows, %d fraud; newest materialization %s", path, table.num_rows, fraud, latest)
        return {
            "path": str(path),
            "rows": table.num_rows,
            "fraud": fraud,
            "data_version": snap["version"],
            "online_features": latest,
        }

    train = training_task(
        training_set=TRAINING_SET_TEMPLATE,
        data_version=DATA_VERSION_TEMPLATE,
        extra_args=TRAINING_EXTRA_ARGS,
        execution_timeout=timedelta(hours=8),
        retries=policy.capped_retries(1),
        doc_md="`fraudops train` on the training set, where the runtime switch says (local process or GPU pod).",
    )

    @task(multiple_outputs=False)
    def evaluate(summary: dict[str, Any], snap: dict[str, Any]) -> dict[str, Any]:
        """Read the registered version's test metrics and lineage back from MLflow and check them."""
        from airflow.sdk.exceptions import AirflowFailException

        from fraudops.registry import describe_version

        version = summary.get("model_version")
        if not version:
            raise AirflowFailException(f"training registered no model version (run {summary.get('run_id')})")
        described = describe_version(version)
        tags = described["tags"]
        if tags.get("data_version") != snap["version"] or described["run_id"] != summary["run_id"]:
            raise AirflowFailException(
                f"v{version} lineage does not match this run: data {tags.get('data_version')} (expected "
                f"{snap['version']}), run {described['run_id']} (expected {summary['run_id']})"
            )
        metrics = {k: float(v) for k, v in tags.items() if k.startswith("test_")}
        for name, value in sorted(metrics.items()):
            log.info("v%s %s = %.4f", version, name, value)
        return {
            "model_name": described["model_name"],
            "model_version": str(version),
            "run_id": summary["run_id"],
            "data_version": snap["version"],
            "threshold": float(tags["threshold"]) if "threshold" in tags else None,
            "metrics": metrics,
            "mlflow_run_url": get_current_context()["ti"].xcom_pull(task_ids="train", key="mlflow_run_url"),
        }

    @task(multiple_outputs=False)
    def gate(evaluation: dict[str, Any]) -> dict[str, Any]:
        """Would the gate pass this version now? (read-only; the alias move re-checks it under the lock)"""
        from fraudops.registry import CHAMPION, current_aliases, describe_version, evaluate_gate
        from fraudops.settings import get_settings

        cfg = get_settings()
        aliases = current_aliases(cfg)
        champion = aliases.get(CHAMPION)
        champion_auc = None
        if champion is not None:
            raw = describe_version(champion, settings=cfg)["tags"].get("test_auc_roc")
            champion_auc = float(raw) if raw is not None else None
        decision = evaluate_gate(
            evaluation["metrics"].get("test_auc_roc"),
            champion_auc,
            floor=cfg.gate.auc_floor,
            max_regression=cfg.gate.max_regression,
            candidate_version=evaluation["model_version"],
            champion_version=champion,
        ).to_dict()
        (log.info if decision["passed"] else log.warning)("gate: %s", decision["reason"])
        return {**decision, "model_version": evaluation["model_version"], "aliases": aliases}

    @task.branch
    def promotion_path(decision: dict[str, Any]) -> str:
        """Export and register a model that passes the gate; otherwise record the rejection."""
        return "export_bundle" if decision["passed"] else "gate_rejected"

    @task(multiple_outputs=False)
    def gate_rejected(decision: dict[str, Any]) -> dict[str, Any]:
        """The run ends here without promotion: say why, and show that no alias moved."""
        from fraudops.registry import current_aliases

        aliases = current_aliases()
        log.warning("v%s not promoted: %s", decision["model_version"], decision["reason"])
        log.warning("aliases unchanged: %s", aliases)
        return {
            "promoted": False,
            "model_version": decision["model_version"],
            "reason": decision["reason"],
            "aliases": aliases,
        }

    @task(multiple_outputs=False)
    def export_bundle(evaluation: dict[str, Any]) -> dict[str, Any]:
        """Export to ONNX, check parity and the bundle, publish it for the predictor."""
        import numpy as np
        from airflow.sdk.exceptions import AirflowFailException

        from fraudops import pipeline, schema
        from fraudops.export.bundle import BundleError, load_bundle
        from fraudops.export.onnx_export import ExportError

        version = evaluation["model_version"]
        try:
            outcome = pipeline.export(model_version=version)
            bundle = load_bundle(outcome["bundle_path"])
        except (ExportError, BundleError) as exc:  # parity or contract: a retry gives the same graph
            raise AirflowFailException(f"v{version}: no usable bundle: {exc}") from exc
        manifest = bundle.manifest
        if manifest.model_version != str(version) or manifest.data_version != evaluation["data_version"]:
            raise AirflowFailException(
                f"bundle manifest says v{manifest.model_version} on data {manifest.data_version}, "
                f"expected v{version} on {evaluation['data_version']}"
            )
        probe = np.zeros((2, schema.N_FEATURES), dtype=np.float32)
        scores = bundle.session().run([manifest.output_name], {manifest.input_name: probe})[0]
        if not np.all(np.isfinite(scores)) or scores.shape[0] != 2:
            raise AirflowFailException(f"the bundle of v{version} answers {scores!r} for a batch of 2 rows")
        log.info("bundle of v%s at %s (parity %.2e)", version, outcome["bundle_path"], outcome["parity_max_abs_diff"])
        return outcome

    @task(multiple_outputs=False)
    def register(evaluation: dict[str, Any], bundle: dict[str, Any]) -> dict[str, Any]:
        """Move the aliases (gate re-checked inside the registry lock), recording who and why."""
        from fraudops import pipeline

        context = get_current_context()
        params = context["params"]
        reason = str(params["reason"]) + (f": {params['reason_text']}" if params.get("reason_text") else "")
        change = pipeline.promote(
            model_version=evaluation["model_version"],
            reason=reason,
            actor=f"airflow:{context['dag'].dag_id}/{context['run_id']}",
            skip_canary=bool(params["skip_canary"]),
        )
        if not change["passed"]:  # the champion changed since the gate task looked
            log.warning("not promoted: %s", change["reason"])
        else:
            log.info("v%s: %s; aliases now %s", change["version"], change["note"], change["aliases_after"])
        return {**change, "promoted": bool(change["passed"] and change["moves"]), "bundle_path": bundle["bundle_path"]}

    @task(outlets=[assets.CHALLENGER], multiple_outputs=False)
    def announce_challenger(registration: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        """Tell the canary rollout (and anyone following the asset) about the new version."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not registration["promoted"]:
            raise AirflowSkipException("nothing moved: no new challenger to announce")
        version = registration["version"]
        aliases = registration["aliases_after"]
        alias = "challenger" if aliases.get("challenger") == version else "champion"
        event = {
            "model_name": registration["model_name"],
            "model_version": version,
            "alias": alias,
            "run_id": evaluation["run_id"],
            "data_version": evaluation["data_version"],
            "bundle_path": registration["bundle_path"],
            "test_auc_roc": evaluation["metrics"].get("test_auc_roc"),
            "announced_at": datetime.now(UTC).isoformat(),
            "reason": registration["reason"],
        }
        get_current_context()["outlet_events"][assets.CHALLENGER].extra = event
        log.info("announced v%s as %s", version, alias)
        return event

    window = validate()
    snap = snapshot(window)
    features = training_set(snap)
    features >> train
    evaluation = evaluate(train.output, snap)
    decision = gate(evaluation)
    path = promotion_path(decision)
    bundle = export_bundle(evaluation)
    path >> [bundle, gate_rejected(decision)]
    registration = register(evaluation, bundle)
    announce_challenger(registration, evaluation)


fraud_training()
