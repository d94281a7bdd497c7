"""The reference profile: contract shape, binning rule, round trip, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fraudops import schema
from fraudops.data.generate import generate_transactions
from fraudops.monitoring.binning import MAX_DISCRETE_VALUES, bin_counts, fit_bins
from fraudops.monitoring.profile import (
    PROFILE_FILENAME,
    ProfileError,
    build_reference_profile,
    load_profile,
    profile_bins,
    save_profile,
)


@pytest.fixture(scope="module")
def training() -> tuple[np.ndarray, np.ndarray]:
    table = generate_transactions(20_000, seed=3)
    X = np.column_stack([table.column(n).to_numpy() for n in schema.FEATURE_NAMES])
    y = table.column(schema.LABEL).to_numpy()
    return X, y


def test_profile_follows_the_contract(training: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = training
    scores = np.random.default_rng(0).beta(0.5, 8.0, 5_000).astype(np.float32)
    profile = build_reference_profile(X, schema.FEATURE_NAMES, scores, y)

    assert profile["format_version"] == 1
    assert profile["feature_schema_version"] == schema.FEATURE_SCHEMA_VERSION
    assert profile["n_rows"] == 20_000
    assert profile["label_rate"] == pytest.approx(float(y.mean()))
    assert list(profile["features"]) == list(schema.FEATURE_NAMES)
    for name, col in profile["features"].items():
        assert len(col["bin_edges"]) == len(col["proportions"]) + 1, name
        assert sum(col["proportions"]) == pytest.approx(1.0)
        assert min(col["proportions"]) > 0, f"{name}: a reference bin is empty"
        assert col["min"] <= col["mean"] <= col["max"]
        assert col["null_rate"] == 0.0
    # Flags get one bin per value, continuous features equal-mass quantile bins.
    assert profile["features"]["is_weekend"]["discrete"] is True
    assert len(profile["features"]["is_weekend"]["proportions"]) == 2
    amount = profile["features"]["amount"]
    assert amount["discrete"] is False
    assert len(amount["proportions"]) == 20
    assert max(amount["proportions"]) < 0.06
    assert profile["score"]["mean"] == pytest.approx(float(scores.mean()), rel=1e-5)


def test_round_trip_and_directory_lookup(training: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, _ = training
    profile = build_reference_profile(X[:, :5], schema.FEATURE_NAMES[:5], np.linspace(0, 1, 100), None)
    assert profile["label_rate"] is None
    saved = save_profile(profile, tmp_path / "bundle" / PROFILE_FILENAME)
    assert load_profile(saved) == profile
    assert load_profile(tmp_path / "bundle") == profile
    bins, ref = profile_bins(profile, "amount")
    assert bins.n_bins == ref.size


def test_binning_is_exact_for_discrete_values_and_open_at_the_ends() -> None:
    values = np.repeat(np.arange(MAX_DISCRETE_VALUES, dtype=np.float32), 10)
    bins = fit_bins(values)
    assert bins.discrete and bins.n_bins == MAX_DISCRETE_VALUES
    assert (bin_counts(values, bins.cuts) == 10).all()
    # Values never seen in the reference land in the outer bins, never dropped.
    counts = bin_counts(np.array([-5.0, 1e9], dtype=np.float32), bins.cuts)
    assert counts[0] == 1 and counts[-1] == 1
    # Heavy ties at the minimum never leave the first quantile bin empty.
    tied = np.concatenate([np.zeros(900), np.linspace(1, 2, 100)]).astype(np.float32)
    tb = fit_bins(tied)
    assert (bin_counts(tied, tb.cuts) > 0).all()


def test_nulls_are_counted_not_binned() -> None:
    x = np.array([[np.nan], [1.0], [2.0], [3.0]], dtype=np.float32)
    profile = build_reference_profile(x, ["a"], np.array([0.1, 0.2]), np.array([0, 1]))
    assert profile["features"]["a"]["null_rate"] == pytest.approx(0.25)
    assert sum(profile["features"]["a"]["proportions"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("features", "names", "scores", "labels", "message"),
    [
        (np.zeros(3), ["a"], np.ones(3), None, "2-D"),
        (np.zeros((3, 2)), ["a"], np.ones(3), None, "2 columns but 1"),
        (np.zeros((3, 2)), ["a", "a"], np.ones(3), None, "duplicate"),
        (np.zeros((0, 1)), ["a"], np.ones(3), None, "no rows"),
        (np.zeros((3, 1)), ["a"], np.ones((3, 2)), None, "scores"),
        (np.full((3, 1), np.nan), ["a"], np.ones(3), None, "every value is null"),
        (np.array([[1.0], [np.inf]]), ["a"], np.ones(3), None, "infinite"),
        (np.zeros((3, 1)), ["a"], np.ones(3), np.array([0, 2]), "0/1"),
    ],
)
def test_bad_input_gets_a_specific_error(
    features: np.ndarray, names: list[str], scores: np.ndarray, labels: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        build_reference_profile(features, names, scores, labels)


def test_corrupt_profile_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(bad)
    bad.write_text('{"format_version": 99}')
    with pytest.raises(ProfileError, match="format_version"):
        load_profile(bad)
    bad.write_text(
        '{"format_version": 1, "features": {"a": {"bin_edges": [0, 1], "proportions": [0.5, 0.5],'
        ' "mean": 0, "std": 0}}, "score": {"bin_edges": [0, 1], "proportions": [1], "mean": 0, "std": 0}}'
    )
    with pytest.raises(ProfileError, match="expected one more"):
        load_profile(bad)
