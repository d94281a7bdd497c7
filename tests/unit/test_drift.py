"""Drift figures on generated traffic: each scenario shows up where it should, a clean day does not."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from fraudops import schema
from fraudops.monitoring.binning import evidently_psi, fill_zeros, psi
from fraudops.monitoring.drift import DriftThresholds, compute_drift
from fraudops.monitoring.job import DAILY_EXCLUDED_FEATURES
from fraudops.monitoring.profile import Profile, ProfileError
from fraudops.monitoring.quality import auc_roc, classification_quality, target_drift
from fraudops.monitoring.simulate import StandInScorer, reference_setup, simulate_day

DAY = date(2026, 10, 20)


@pytest.fixture(scope="module")
def reference() -> tuple[Profile, StandInScorer, float]:
    return reference_setup(20_000, seed=11)


def _drift(reference: tuple[Profile, StandInScorer, float], scenario: str, n_rows: int = 4_000) -> tuple:
    profile, scorer, threshold = reference
    records, tx = simulate_day(DAY, n_rows, scorer, scenario=scenario, seed=11, threshold=threshold)
    result = compute_drift(records, profile, DriftThresholds(), exclude=DAILY_EXCLUDED_FEATURES)
    return result, records, tx


def _drifted(result) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.name for f in result.features if f.drifted and not f.excluded}


def test_a_clean_day_does_not_drift(reference: tuple[Profile, StandInScorer, float]) -> None:
    result, _, _ = _drift(reference, "baseline")
    assert _drifted(result) == set()
    assert result.drift_share == 0.0
    assert not result.dataset_drift and not result.alert
    assert result.score is not None and result.score.psi < 0.05
    # Calendar features are measured, but a single day always "drifts" on them.
    excluded = {f.name: f for f in result.features if f.excluded}
    assert set(excluded) == set(DAILY_EXCLUDED_FEATURES)
    assert excluded["day_of_week"].psi > 1.0
    assert result.to_dict()["n_features"] == schema.N_FEATURES - len(DAILY_EXCLUDED_FEATURES)


def test_amount_inflation_drifts_the_amount_features(reference: tuple[Profile, StandInScorer, float]) -> None:
    result, _, _ = _drift(reference, "amount_inflation")
    drifted = _drifted(result)
    assert {"amount", "amount_log", "card_avg_amount_30d", "card_std_amount_30d"} <= drifted
    assert all("amount" in name for name in drifted), drifted
    assert not result.dataset_drift  # a handful of features out of 126
    assert result.top_drifted(1)[0].name in drifted


def test_merchant_mix_drifts_the_merchant_features(reference: tuple[Profile, StandInScorer, float]) -> None:
    result, _, _ = _drift(reference, "merchant_mix")
    drifted = _drifted(result)
    assert {"merchant_category_code", "merchant_risk_score", "card_online_txn_ratio_30d"} <= drifted
    assert len(drifted) <= 6
    assert not result.dataset_drift


def test_new_market_is_dataset_drift_beyond_the_alert_level(reference: tuple[Profile, StandInScorer, float]) -> None:
    result, _, _ = _drift(reference, "new_market")
    assert result.drift_share > 0.5
    assert result.dataset_drift and result.alert
    assert result.score is not None and result.score.drifted
    summary = result.to_dict(top_k=5)
    assert len(summary["top_drifted"]) == 5
    psis = [t["psi"] for t in summary["top_drifted"]]
    assert psis == sorted(psis, reverse=True)


def test_fraud_surge_shows_in_the_target_and_the_scores(reference: tuple[Profile, StandInScorer, float]) -> None:
    profile, _, _ = reference
    clean, clean_records, _ = _drift(reference, "baseline", 8_000)
    surge, surge_records, surge_tx = _drift(reference, "fraud_surge", 8_000)
    assert not surge.dataset_drift  # the features barely move: the prior does
    target = target_drift(surge_tx.column(schema.LABEL).to_numpy(), profile["label_rate"])
    assert target["drifted"] and target["relative_change"] > 1.0 and target["p_value"] < 1e-6
    assert surge.score is not None and clean.score is not None
    assert surge.score.mean is not None and clean.score.mean is not None
    assert surge.score.mean > clean.score.mean * 1.15
    surge_flagged = np.mean(surge_records.column("decision").to_numpy())
    clean_flagged = np.mean(clean_records.column("decision").to_numpy())
    assert surge_flagged > clean_flagged * 1.3


def test_missing_features_and_unknown_exclusions_are_refused(reference: tuple[Profile, StandInScorer, float]) -> None:
    profile, _, _ = reference
    with pytest.raises(ProfileError, match="amount"):
        compute_drift({"probability": np.zeros(3)}, profile)
    cols = {n: np.zeros(3, np.float32) for n in profile["features"]}
    with pytest.raises(ProfileError, match="not_a_feature"):
        compute_drift(cols, profile, exclude=["not_a_feature"])


def test_empty_traffic_is_no_drift_not_an_error(reference: tuple[Profile, StandInScorer, float]) -> None:
    profile, _, _ = reference
    cols = {n: np.zeros(0, np.float32) for n in profile["features"]}
    result = compute_drift(cols, profile, score_column=None)
    assert result.n_rows == 0 and result.n_drifted == 0 and not result.dataset_drift
    assert result.to_dict()["features"]["amount"]["psi"] is None  # NaN written as null


def test_nulls_are_reported_apart_from_the_psi(reference: tuple[Profile, StandInScorer, float]) -> None:
    profile, scorer, threshold = reference
    records, _ = simulate_day(DAY, 2_000, scorer, seed=11, threshold=threshold)
    amount = records.column("amount").to_numpy().copy()
    amount[:500] = np.nan
    records = records.set_column(records.schema.get_field_index("amount"), "amount", pa.array(amount))
    result = compute_drift(records, profile)
    col = next(f for f in result.features if f.name == "amount")
    assert col.null_rate == pytest.approx(0.25)
    assert col.n == 1_500 and not col.drifted


def test_psi_basics() -> None:
    p = np.array([0.25, 0.25, 0.5])
    assert psi(p, p) == 0.0
    assert psi(p, np.array([0.5, 0.25, 0.25])) == pytest.approx(2 * 0.25 * np.log(2))
    assert np.isnan(psi(p, np.zeros(3)))
    # Empty bins are filled as Evidently fills them.
    assert fill_zeros(np.array([0.0, 0.5, 0.5])).tolist() == [0.0001, 0.5, 0.5]
    assert fill_zeros(np.array([0.0, 0.00005, 0.99995]))[0] == pytest.approx(0.00005 / 1e6)
    with pytest.raises(ValueError, match="bin count mismatch"):
        psi(p, np.array([0.5, 0.5]))


def test_evidently_replica_handles_both_binning_branches() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=2_000).astype(np.float32)
    assert evidently_psi(ref, ref) == pytest.approx(0.0)
    assert evidently_psi(ref, ref + 1.0) > 0.5
    flags = (rng.random(2_000) < 0.3).astype(np.float32)
    shifted = (rng.random(2_000) < 0.6).astype(np.float32)
    expected_ref = np.array([np.mean(flags == 0), np.mean(flags == 1)])
    expected_cur = np.array([np.mean(shifted == 0), np.mean(shifted == 1)])
    assert evidently_psi(flags, shifted) == pytest.approx(psi(expected_ref, expected_cur))


def test_auc_and_quality_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(3_000) < 0.05
    s = np.round(rng.random(3_000) * 0.6 + 0.4 * y, 2)  # rounded: many ties
    assert auc_roc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc_roc(np.zeros(5), np.arange(5)) is None
    q = classification_quality(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.8, 0.1]), np.array([1, 0, 1, 0]))
    assert q == {"n": 4, "n_positive": 2, "precision": 0.5, "recall": 0.5, "auc_roc": 0.75}


def test_target_drift_needs_significance_and_size() -> None:
    assert not target_drift(np.zeros(0), 0.01)["drifted"]
    assert not target_drift(np.r_[np.ones(11), np.zeros(989)], 0.01)["drifted"]  # 1.1 % vs 1 %: noise
    big = np.r_[np.ones(10_500), np.zeros(989_500)]  # 1.05 %: significant, but a 5 % move
    res = target_drift(big, 0.01)
    assert res["p_value"] < 0.01 and not res["drifted"]
    assert target_drift(np.r_[np.ones(30), np.zeros(970)], 0.01)["drifted"]
    assert not target_drift(np.ones(10), None)["drifted"]
