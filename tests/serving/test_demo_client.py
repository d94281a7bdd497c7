"""The main job's moving parts (``fraudops.demo``) against the real thing.

A real ``fraudops serve`` process on a real bundle, scored over HTTP by the demo's
client (Arrow batches and single JSON requests), stopped gracefully: every scored row
is in the prediction log. The webhook receiver is a real HTTP server; the home guard
never deletes state that the demo did not create.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fraudops.demo import DemoError, PredictorProcess, WebhookReceiver, prepare_home, score_examples, score_table


def test_demo_client_scores_through_a_real_predictor_and_the_log_keeps_every_row(
    tmp_path: Path, make_bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraudops.data.generate import generate_transactions
    from fraudops.demo import wait_for_log

    home = tmp_path / "home"
    monkeypatch.setenv("FRAUDOPS_HOME", str(home))
    bundle = make_bundle("4")
    now = datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    table = generate_transactions(2_500, seed=5, start=day, days=1, id_prefix="t-")
    predictor = PredictorProcess(
        log_file=tmp_path / "predictor.log",
        env={"FRAUDOPS_SERVING_BUNDLE_DIR": str(bundle), "FRAUDOPS_SERVING_LOG_FLUSH_INTERVAL_S": "0.5"},
    )
    with predictor:
        assert predictor.versions() == {"champion": "4"}
        examples = score_examples(predictor.url, table, n=3)
        assert [e["transaction_id"] for e in examples] == table.column("transaction_id").to_pylist()[:3]
        assert all(0.0 <= e["probability"] <= 1.0 and e["variant"] == "champion" for e in examples)
        stats = score_table(predictor.url, table, batch_rows=1_000)
        assert (stats.rows, stats.requests, stats.errors) == (2_500, 3, 0)
        assert stats.variants == {"champion": 2_500} and stats.versions == {"4": 2_500}
        # The admin endpoint answers with the key the demo generated, and only with it.
        assert predictor.reload()["serving"]["champion"]["model_version"] == "4"
        wrong = httpx.post(f"{predictor.url}/admin/reload", headers={"X-API-Key": "nope"}, timeout=10)
        assert wrong.status_code == 401
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean stop.
    assert predictor.proc is not None and predictor.proc.returncode in (0, -signal.SIGTERM)
    # Stopped gracefully: every scored row is in the log (read over two days, in case the
    # traffic straddled midnight UTC).
    from fraudops.monitoring.predlog import read_prediction_log

    logged = read_prediction_log(home / "prediction_log", day, day + timedelta(days=2), variants=None, columns=[])
    assert logged.num_rows == 2_503
    assert wait_for_log(home / "prediction_log", now.date(), 1, timeout=5) >= 1


def test_predictor_that_cannot_start_says_why(tmp_path: Path) -> None:
    predictor = PredictorProcess(
        log_file=tmp_path / "p.log",
        env={"FRAUDOPS_HOME": str(tmp_path), "FRAUDOPS_SERVING_BUNDLE_DIR": str(tmp_path / "missing")},
        ready_timeout_s=8,
    )
    with pytest.raises(DemoError, match=r"not ready|exited"):
        predictor.start()
    assert predictor.proc is not None and predictor.proc.poll() is not None


def test_webhook_receiver_records_posts_and_answers_scripted_failures() -> None:
    with WebhookReceiver(statuses=[500]) as receiver:
        first = httpx.post(receiver.url, json={"text": "drift 62 %"}, timeout=5)
        second = httpx.post(receiver.url, json={"text": "again"}, timeout=5)
    assert (first.status_code, second.status_code) == (500, 200)
    assert receiver.texts() == ["drift 62 %", "again"]
    with pytest.raises(httpx.HTTPError):
        httpx.post(receiver.url, json={}, timeout=2)


def test_prepare_home_wipes_only_what_the_demo_made(tmp_path: Path) -> None:
    foreign = tmp_path / "operator-home"
    (foreign / "mlflow").mkdir(parents=True)
    (foreign / "mlflow" / "mlflow.db").write_text("precious")
    with pytest.raises(DemoError, match="did not create"):
        prepare_home(foreign, fresh=True)
    assert (foreign / "mlflow" / "mlflow.db").read_text() == "precious"
    prepare_home(foreign, fresh=False)  # --keep runs on top of it
    assert (foreign / "mlflow" / "mlflow.db").is_file()

    demo_home = tmp_path / "demo"
    prepare_home(demo_home, fresh=True)
    (demo_home / "warehouse.duckdb").write_text("old run")
    prepare_home(demo_home, fresh=True)
    assert not (demo_home / "warehouse.duckdb").exists() and (demo_home / ".fraudops-demo").is_file()
