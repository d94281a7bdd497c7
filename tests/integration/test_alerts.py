"""Slack alerts and metric pushes sent to a real local HTTP receiver (http.server on a free port)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from fraudops.demo import WebhookReceiver
from fraudops.monitoring import predlog
from fraudops.monitoring.alerts import send_slack
from fraudops.monitoring.job import REPORT_FILE, SUMMARY_FILE, read_summary, run_drift_job
from fraudops.monitoring.profile import Profile
from fraudops.monitoring.simulate import StandInScorer, reference_setup, simulate_day
from fraudops.settings import get_settings

DAY = date(2026, 10, 23)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real local HTTP endpoint that answers a scripted sequence of statuses, optionally slowly."""
    with WebhookReceiver() as state:
        yield state


@pytest.fixture(scope="module")
def reference() -> tuple[Profile, StandInScorer, float]:
    return reference_setup(20_000, seed=31)


@pytest.fixture
def drifted_day(fraudops_home: Path, reference: tuple[Profile, StandInScorer, float]) -> Profile:
    profile, scorer, threshold = reference
    records, _ = simulate_day(
        DAY, 3_000, scorer, scenario="new_market", seed=31, threshold=threshold, model_version="7"
    )
    predlog.write_log_batch(records, get_settings().prediction_log_dir)
    return profile


def test_alert_carries_what_an_operator_needs(drifted_day: Profile, receiver: WebhookReceiver) -> None:
    summary = run_drift_job(
        DAY, profile=drifted_day, report=False, webhook_url=receiver.url, report_url="https://airflow.example/report/1"
    )
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["method"] == "POST" and request["path"] == "/services/T000/B000/secret-token"
    message = request["body"]
    text = message["text"]
    share = summary["drift"]["drift_share"]
    assert f"{share:.0%}" in text and "alert level 50%" in text
    assert "fraud-detector v7" in text and "2026-10-23" in text
    for top in summary["drift"]["top_drifted"][:5]:
        assert top["feature"] in text
    assert "https://airflow.example/report/1" in message["blocks"][1]["text"]["text"]
    # Delivery is recorded next to the results; the secret path of the URL is not.
    saved = read_summary(get_settings().monitoring_dir, DAY)
    assert saved["alert"]["delivered"] is True and saved["alert"]["attempts"] == 1
    assert saved["alert"]["destination"] == receiver.url.split("/services")[0]
    assert "secret-token" not in json.dumps(saved)


def test_transient_failures_are_retried(drifted_day: Profile, receiver: WebhookReceiver) -> None:
    receiver.statuses = [503, 500]
    result = send_slack(receiver.url, {"text": "x"}, retries=3, backoff_s=0.01)
    assert result.delivered and result.attempts == 3 and len(receiver.requests) == 3


def test_a_failing_webhook_is_reported_and_loses_nothing(drifted_day: Profile, receiver: WebhookReceiver) -> None:
    receiver.statuses = [500] * 10
    summary = run_drift_job(DAY, profile=drifted_day, report=False, webhook_url=receiver.url)
    alert = summary["alert"]
    assert alert["delivered"] is False and alert["attempts"] == 4 and alert["status_code"] == 500
    assert "HTTP 500" in alert["error"]
    saved = read_summary(get_settings().monitoring_dir, DAY)
    assert saved["drift"] == summary["drift"] and saved["alert"]["delivered"] is False

    # A 4xx is not retried: the URL or payload is wrong, not the weather.
    receiver.requests.clear()
    receiver.statuses = [404]
    gone = send_slack(receiver.url, {"text": "x"}, retries=3, backoff_s=0.01)
    assert not gone.delivered and gone.attempts == 1 and gone.status_code == 404


def test_a_webhook_that_times_out_or_refuses(drifted_day: Profile, receiver: WebhookReceiver) -> None:
    receiver.delay_s = 1.0
    started = time.perf_counter()
    slow = send_slack(receiver.url, {"text": "x"}, timeout_s=0.2, retries=1, backoff_s=0.01)
    assert not slow.delivered and slow.attempts == 2 and "Timeout" in (slow.error or "")
    assert time.perf_counter() - started < 3.0
    refused = send_slack("http://127.0.0.1:9/hook", {"text": "x"}, retries=1, backoff_s=0.01)
    assert not refused.delivered and "ConnectError" in (refused.error or "")
    assert not send_slack("not a url", {"text": "x"}).delivered

    summary = run_drift_job(DAY, profile=drifted_day, report=False, webhook_url="http://127.0.0.1:9/hook")
    assert summary["alert"]["delivered"] is False
    assert (get_settings().monitoring_dir / DAY.isoformat() / SUMMARY_FILE).is_file()
    assert not (get_settings().monitoring_dir / DAY.isoformat() / REPORT_FILE).exists()


def test_no_alert_below_the_alert_level(
    fraudops_home: Path, reference: tuple[Profile, StandInScorer, float], receiver: WebhookReceiver
) -> None:
    profile, scorer, threshold = reference
    records, _ = simulate_day(DAY, 3_000, scorer, scenario="merchant_mix", seed=31, threshold=threshold)
    predlog.write_log_batch(records, get_settings().prediction_log_dir)
    summary = run_drift_job(DAY, profile=profile, report=False, webhook_url=receiver.url)
    assert summary["drift"]["n_drifted"] >= 3 and summary["alert_reasons"] == []
    assert "alert" not in summary and receiver.requests == []


def test_drift_gauges_are_pushed_to_a_pushgateway(drifted_day: Profile, receiver: WebhookReceiver) -> None:
    gateway = receiver.url.split("/services")[0]
    summary = run_drift_job(DAY, profile=drifted_day, report=False, pushgateway_url=gateway)
    assert summary["metrics_push"]["delivered"] is True
    request = receiver.requests[0]
    assert request["method"] == "PUT"
    assert request["path"] == "/metrics/job/fraud_drift_monitoring/model_name/fraud-detector"
    body = request["raw"].decode()
    share = summary["drift"]["drift_share"]
    assert f'fraudops_drift_share{{model_name="fraud-detector",model_version="7"}} {share!r}' in body
    assert "# TYPE fraudops_drift_share gauge" in body


def test_a_quality_drop_alerts_even_without_feature_drift(
    fraudops_home: Path, reference: tuple[Profile, StandInScorer, float], receiver: WebhookReceiver
) -> None:
    import numpy as np
    import pyarrow as pa

    from fraudops.data.generate import simulate_labels

    profile, _, threshold = reference
    rng = np.random.default_rng(0)

    def broken(X: np.ndarray) -> np.ndarray:  # a model that lost its signal: scores are noise
        return (rng.random(len(X)) * 0.02).astype(np.float32)

    txs = []
    for back in range(3, -1, -1):  # three earlier days, whose labels have mostly arrived
        day = date.fromordinal(DAY.toordinal() - back)
        records, tx = simulate_day(day, 3_000, broken, seed=31, threshold=threshold, model_version="7")
        predlog.write_log_batch(records, get_settings().prediction_log_dir)
        txs.append(tx)
    labels = pa.concat_tables([simulate_labels(t, mean_delay_days=1.0) for t in txs])
    summary = run_drift_job(DAY, profile=profile, labels=labels, report=False, webhook_url=receiver.url)
    assert not summary["drift"]["dataset_drift"]
    overall = summary["quality"]["overall"]
    assert overall["n_positive"] >= 20 and overall["auc_roc"] < 0.7
    assert any("below the floor 0.85" in r for r in summary["alert_reasons"])
    message = receiver.requests[0]["body"]
    assert "AUC-ROC" in message["text"] and summary["alert"]["delivered"]
