"""Decisions over given facts: drift-triggered retraining (cooldown, one at a time) and the canary."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fraudops.data.generate import simulate_labels
from fraudops.monitoring.policy import CanaryPolicy, decide_canary, decide_retraining, variant_stats
from fraudops.monitoring.predlog import log_schema
from fraudops.monitoring.quality import read_labels
from fraudops.monitoring.simulate import StandInScorer, reference_setup, simulate_day

NOW = datetime(2026, 10, 21, 2, 0, tzinfo=UTC)


def _summary(share: float, dataset_drift: bool, status: str = "ok", n_rows: int = 5_000) -> dict[str, Any]:
    return {
        "status": status,
        "date": "2026-10-20",
        "model_name": "fraud-detector",
        "model_version": "3",
        "n_rows": n_rows,
        "summary_path": "/x/2026-10-20/summary.json",
        "drift": {
            "drift_share": share,
            "dataset_drift": dataset_drift,
            "n_drifted": round(share * 126),
            "n_features": 126,
            "thresholds": {"psi": 0.2, "dataset_share": 0.3, "alert_share": 0.5},
            "top_drifted": [
                {"feature": "merchant_category_code", "psi": 2.4},
                {"feature": "card_age_days", "psi": 1.3},
            ],
        },
    }


def test_dataset_drift_triggers_training_with_reason_and_summary() -> None:
    decision = decide_retraining(
        _summary(0.68, True), now=NOW, last_triggered_at=None, training_running=False, cooldown_hours=24
    )
    assert decision.trigger
    assert "68%" in decision.reason and "merchant_category_code" in decision.reason
    conf = decision.conf
    assert conf["reason"] == "drift" and conf["triggered_by"] == "fraud_drift_monitoring"
    assert conf["drift_summary"]["drift_share"] == 0.68
    assert conf["drift_summary"]["model_version"] == "3"
    assert conf["drift_summary"]["summary_path"].endswith("summary.json")


def test_cooldown_blocks_a_retraining_storm_then_lets_go() -> None:
    drifted = _summary(0.68, True)
    recent = NOW - timedelta(hours=5)
    blocked = decide_retraining(drifted, now=NOW, last_triggered_at=recent, training_running=False, cooldown_hours=24)
    assert not blocked.trigger and "cooldown" in blocked.reason
    assert (recent + timedelta(hours=24)).isoformat() in blocked.reason
    later = recent + timedelta(hours=24)
    assert decide_retraining(
        drifted, now=later, last_triggered_at=recent, training_running=False, cooldown_hours=24
    ).trigger
    assert decide_retraining(
        drifted, now=NOW, last_triggered_at=recent, training_running=False, cooldown_hours=0
    ).trigger


def test_no_trigger_while_training_runs_or_without_dataset_drift() -> None:
    running = decide_retraining(
        _summary(0.68, True), now=NOW, last_triggered_at=None, training_running=True, cooldown_hours=24
    )
    assert not running.trigger and "already under way" in running.reason
    calm = decide_retraining(
        _summary(0.1, False), now=NOW, last_triggered_at=None, training_running=False, cooldown_hours=24
    )
    assert not calm.trigger and "no dataset drift" in calm.reason
    empty = decide_retraining(
        _summary(0.0, False, "no_data", 0), now=NOW, last_triggered_at=None, training_running=False, cooldown_hours=24
    )
    assert not empty.trigger
    with pytest.raises(ValueError, match="timezone"):
        decide_retraining(
            _summary(0.68, True),
            now=NOW.replace(tzinfo=None),
            last_triggered_at=None,
            training_running=False,
            cooldown_hours=24,
        )


# --------------------------------------------------------------------------- canary

DAY = date(2026, 10, 20)


@pytest.fixture(scope="module")
def model() -> tuple[StandInScorer, float]:
    _, scorer, threshold = reference_setup(20_000, seed=5)
    return scorer, threshold


def _traffic(
    model: tuple[StandInScorer, float],
    challenger_scorer: Any,
    *,
    challenger_latency: float = 3.0,
    n_champion: int = 12_000,
    n_challenger: int = 6_000,
    champion_scorer: Any = None,
) -> tuple[pa.Table, pa.Table]:
    scorer, threshold = model
    champ, champ_tx = simulate_day(
        DAY, n_champion, champion_scorer or scorer, seed=5, model_version="3", threshold=threshold
    )
    chall, chall_tx = simulate_day(
        DAY,
        n_challenger,
        challenger_scorer,
        seed=5,
        model_version="4",
        variant="challenger",
        threshold=threshold,
        id_prefix="chall-",
    )
    lat = np.random.default_rng(0).lognormal(np.log(challenger_latency), 0.3, chall.num_rows).astype(np.float32)
    chall = chall.set_column(chall.schema.get_field_index("latency_ms"), "latency_ms", pa.array(lat)).cast(log_schema())
    labels = read_labels(pa.concat_tables([simulate_labels(champ_tx), simulate_labels(chall_tx)]))
    return pa.concat_tables([champ, chall]), labels


def _decide(log: pa.Table, labels: pa.Table | None, *, elapsed: float = 24.0, errors: tuple[int, int] = (0, 0)):  # type: ignore[no-untyped-def]
    champion = variant_stats(log, "champion", n_errors=errors[0], labels=labels)
    challenger = variant_stats(log, "challenger", n_errors=errors[1], labels=labels)
    return decide_canary(champion, challenger, watch_elapsed_hours=elapsed, policy=CanaryPolicy(watch_hours=24))


def test_a_challenger_as_good_as_the_champion_is_promoted(model: tuple[StandInScorer, float]) -> None:
    log, labels = _traffic(model, model[0])
    decision = _decide(log, labels)
    assert decision.action == "promote", decision.reason
    assert {c.name for c in decision.checks} >= {"traffic", "error_rate", "latency_p95", "precision", "recall"}
    assert decision.challenger["model_version"] == "4" and decision.champion["model_version"] == "3"
    assert decision.challenger["quality"]["n_positive"] >= 20


def test_a_worse_challenger_is_rolled_back_on_labels(model: tuple[StandInScorer, float]) -> None:
    scorer, _ = model
    rng = np.random.default_rng(3)

    def noisy(X: np.ndarray) -> np.ndarray:  # a model that lost most of its signal
        return np.clip(scorer(X) * 0.3 + rng.random(len(X)).astype(np.float32) * 0.2, 0, 1).astype(np.float32)

    log, labels = _traffic(model, noisy)
    decision = _decide(log, labels)
    assert decision.action == "rollback"
    assert "recall failed" in decision.reason or "precision failed" in decision.reason
    # Fail fast: a clear failure rolls back before the watch period ends.
    assert _decide(log, labels, elapsed=2.0).action == "rollback"


def test_a_challenger_that_trades_recall_for_far_better_precision_is_promoted(
    model: tuple[StandInScorer, float],
) -> None:
    scorer, threshold = model

    def stale(X: np.ndarray) -> np.ndarray:  # a champion after drift: the same ranking, most rows flagged
        return np.clip(scorer(X) + threshold, 0, 1).astype(np.float32)

    log, labels = _traffic(model, scorer, champion_scorer=stale)
    decision = _decide(log, labels)
    champion, challenger = decision.champion["quality"], decision.challenger["quality"]
    assert champion["recall"] > challenger["recall"] + 0.05 and challenger["precision"] > champion["precision"]
    assert decision.action == "promote", decision.reason
    recall = next(c for c in decision.checks if c.name == "recall")
    assert recall.passed and "better balance" in recall.detail
    # The same recall drop without the better balance still rolls back.
    worse, worse_labels = _traffic(model, stale, champion_scorer=scorer)
    assert _decide(worse, worse_labels).action == "rollback"


def test_slow_or_failing_challengers_are_rolled_back(model: tuple[StandInScorer, float]) -> None:
    log, labels = _traffic(model, model[0], challenger_latency=40.0)
    slow = _decide(log, labels)
    assert slow.action == "rollback" and "latency_p95 failed" in slow.reason
    log, labels = _traffic(model, model[0])
    failing = _decide(log, labels, errors=(3, 300))
    assert failing.action == "rollback" and "error_rate failed" in failing.reason


def test_without_labels_a_moved_score_distribution_rolls_back(model: tuple[StandInScorer, float]) -> None:
    scorer, _ = model

    def inflated(X: np.ndarray) -> np.ndarray:
        return np.clip(scorer(X) * 5 + 0.05, 0, 1).astype(np.float32)

    log, _ = _traffic(model, inflated)
    decision = _decide(log, None)
    assert decision.action == "rollback" and "score_distribution failed" in decision.reason
    same, _ = _traffic(model, scorer)
    assert _decide(same, None).action == "promote"


def test_the_watch_period_and_thin_traffic(model: tuple[StandInScorer, float]) -> None:
    log, labels = _traffic(model, model[0])
    waiting = _decide(log, labels, elapsed=3.0)
    assert waiting.action == "wait" and "3.0/24.0 h" in waiting.reason
    thin, thin_labels = _traffic(model, model[0], n_challenger=50)
    assert _decide(thin, thin_labels, elapsed=3.0).action == "wait"
    over = _decide(thin, thin_labels, elapsed=24.0)
    assert over.action == "rollback" and "fewer than 200" in over.reason
    assert over.to_dict()["challenger"]["n_requests"] == 50
