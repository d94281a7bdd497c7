"""The monitoring DAGs end to end, run by Airflow itself (`airflow dags test`).

* `fraud_drift_monitoring` on a logged day of drifted traffic: the drift results and the
  Evidently report, the Slack alert at a local HTTP receiver (Airflow Connection
  `fraudops_slack`), the drift-triggered `fraud_training` run, the cooldown on a re-run,
  and a webhook that fails: visible in the run, results kept.
* `fraud_canary_rollout` on logged champion and challenger traffic, with real registered
  models: a challenger as good as the champion is promoted, a slow one is rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fraudops.demo import WebhookReceiver
from tests.dags.support import dag_runs, embedded_for_test, migrate, read_xcom

pytestmark = pytest.mark.slow

DAY = date(2026, 10, 23)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A local Slack webhook (a real HTTP server): records each request, answers scripted statuses."""
    with WebhookReceiver() as state:
        yield state


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrate(tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture(scope="module")
def reference() -> Any:
    from fraudops.monitoring.simulate import reference_setup

    return reference_setup(20_000, seed=31)


@pytest.fixture
def airflow(fraudops_home: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from fraudops.orchestration.policy import RETRIES_CAP_ENV

    monkeypatch.setenv(RETRIES_CAP_ENV, "0")
    return embedded_for_test(template)


def _log_day(reference: Any, day: date, scenario: str, *, rows: int = 3_000, write: bool = True, **kwargs: Any) -> Any:
    """Simulated, scored traffic of one day, written to the prediction log (unless ``write`` is False)."""
    from fraudops.monitoring import predlog
    from fraudops.monitoring.simulate import simulate_day
    from fraudops.settings import get_settings

    _, scorer, threshold = reference
    records, _ = simulate_day(day, rows, scorer, scenario=scenario, seed=31, threshold=threshold, **kwargs)
    if write:
        predlog.write_log_batch(records, get_settings().prediction_log_dir)
    return records


def _midnight_after(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def test_drift_alerts_triggers_training_once_and_survives_a_failing_webhook(
    airflow: Any, reference: Any, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraudops.monitoring.job import champion_profile_path, read_summary
    from fraudops.monitoring.profile import save_profile
    from fraudops.orchestration.runs import run_dag_test
    from fraudops.settings import get_settings

    cfg = get_settings()
    profile = reference[0]
    save_profile(profile, champion_profile_path(cfg, "1"))  # what the champion's bundle holds
    _log_day(reference, DAY, "new_market", model_version="1")
    monkeypatch.setenv("AIRFLOW_CONN_FRAUDOPS_SLACK", json.dumps({"conn_type": "http", "password": receiver.url}))

    run = run_dag_test(airflow, "fraud_drift_monitoring", _midnight_after(DAY))
    assert run.succeeded, run.states()
    drift = run.returns["drift"]
    assert drift["date"] == DAY.isoformat() and drift["dataset_drift"] is True and drift["alert_delivered"] is True
    summary = read_summary(cfg.monitoring_dir, DAY)
    assert summary["drift"]["dataset_drift"] and (cfg.monitoring_dir / DAY.isoformat() / "report.html").is_file()
    # The alert reached the webhook, with the link of the report served by the Airflow plugin.
    assert len(receiver.requests) == 1
    text = json.dumps(receiver.requests[0]["body"])
    assert f"/fraudops/drift/{DAY.isoformat()}/report.html" in text and "fraud-detector v1" in text
    link = read_xcom(airflow.db_path, "fraud_drift_monitoring", "drift", "_link_DriftReportLink")
    assert link == f"http://localhost:8080/fraudops/drift/{DAY.isoformat()}/report.html"
    # Dataset drift triggered one training run, with the reason and the figures in its conf.
    assert run.returns["decide_retraining"]["trigger"] is True
    assert run.states()["trigger_training"] == "success" and run.states()["record_trigger"] == "success"
    (training,) = dag_runs(airflow.db_path, "fraud_training")
    conf = training["conf"]
    assert conf["reason"] == "drift" and conf["triggered_by"] == "fraud_drift_monitoring"
    assert conf["window_end"] == _midnight_after(DAY).isoformat()
    assert conf["drift_summary"]["drift_share"] == summary["drift"]["drift_share"]

    # The same day again: same results, and no second training run (one is under way,
    # and the cooldown holds).
    again = run_dag_test(airflow, "fraud_drift_monitoring", _midnight_after(DAY))
    assert again.succeeded, again.states()
    assert again.returns["drift"]["drift_share"] == drift["drift_share"]
    assert again.returns["decide_retraining"]["trigger"] is False
    assert again.states()["trigger_training"] == "skipped"
    assert len(dag_runs(airflow.db_path, "fraud_training")) == 1

    # A webhook that fails: the run shows it, and the results are saved all the same.
    next_day = DAY + timedelta(days=1)
    _log_day(reference, next_day, "new_market", model_version="1")
    receiver.statuses = [500] * 20
    failing = run_dag_test(airflow, "fraud_drift_monitoring", _midnight_after(next_day))
    assert failing.state == "failed"
    assert failing.states()["drift"] == "success" and failing.states()["alert_delivery"] == "failed"
    assert failing.states()["decide_retraining"] == "success"
    saved = read_summary(cfg.monitoring_dir, next_day)
    assert saved["drift"]["dataset_drift"] and saved["alert"]["delivered"] is False


def _train_and_register(tmp: Path, seed: int) -> str:
    import pyarrow.parquet as pq

    from fraudops.data.generate import generate_transactions
    from fraudops.training.config import TrainConfig
    from fraudops.training.pipeline import train_model

    data = tmp / f"train-{seed}.parquet"
    pq.write_table(generate_transactions(6_000, seed=seed, days=14), data)
    outcome = train_model(data, config=TrainConfig(epochs=1, seed=seed))
    assert outcome is not None and outcome.model_version
    return outcome.model_version


def test_canary_promotes_a_sound_challenger_and_rolls_back_a_slow_one(
    airflow: Any, reference: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    from fraudops.monitoring import predlog
    from fraudops.orchestration.runs import run_dag_test
    from fraudops.registry import alias_history, current_aliases, promote
    from fraudops.settings import get_settings

    # Real registered models; the gate is opened so that 1-epoch models take the aliases.
    monkeypatch.setenv("FRAUDOPS_GATE__AUC_FLOOR", "0.0")
    monkeypatch.setenv("FRAUDOPS_GATE__MAX_REGRESSION", "1.0")
    get_settings.cache_clear()
    v1, v2 = _train_and_register(tmp_path, 1), _train_and_register(tmp_path, 2)
    promote(v1)
    promote(v2)
    assert current_aliases() == {"champion": v1, "challenger": v2}

    # A day of traffic: 3,000 champion requests, 1,000 for the challenger, same model quality.
    _log_day(reference, DAY, "baseline", model_version=v1)
    _log_day(reference, DAY, "baseline", rows=1_000, model_version=v2, variant="challenger", id_prefix="c2-")
    # A watch shorter than the configured 24 h (as in the demo) is judged on its own length.
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
    conf = {"model_version": v2, "announced_at": start.isoformat(), "watch_hours": 12}
    run = run_dag_test(airflow, "fraud_canary_rollout", start + timedelta(days=1), conf=conf)
    assert run.succeeded, run.states()
    assert run.returns["compare"]["action"] == "promote", run.returns["compare"]["reason"]
    assert run.states()["promote_challenger"] == "success" and run.states()["rollback_challenger"] == "skipped"
    assert run.states()["human_approval"] == "skipped"
    assert current_aliases() == {"champion": v2}
    last = alias_history()[-1]
    assert last.actor.startswith("airflow:fraud_canary_rollout/") and "canary passed" in last.reason

    # A new challenger that answers slowly (p95 far above the 50 ms SLA) is rolled back.
    v3 = _train_and_register(tmp_path, 3)
    promote(v3)
    day = DAY + timedelta(days=1)
    _log_day(reference, day, "baseline", model_version=v2)
    records = _log_day(
        reference, day, "baseline", rows=1_000, model_version=v3, variant="challenger", id_prefix="c3-", write=False
    )
    at = records.schema.get_field_index(predlog.LATENCY_MS)
    slow = records.set_column(at, records.schema.field(at), pa.array([250.0] * records.num_rows, type=pa.float32()))
    predlog.write_log_batch(slow, get_settings().prediction_log_dir)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    conf = {"model_version": v3, "announced_at": start.isoformat(), "watch_hours": 24}
    run = run_dag_test(airflow, "fraud_canary_rollout", start + timedelta(days=1), conf=conf)
    assert run.succeeded, run.states()
    assert run.returns["compare"]["action"] == "rollback" and "latency" in run.returns["compare"]["reason"]
    assert run.states()["rollback_challenger"] == "success" and run.states()["promote_challenger"] == "skipped"
    assert current_aliases() == {"champion": v2}
    assert "canary failed" in alias_history()[-1].reason
