import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from fraudops import schema
from fraudops.data.generate import SCENARIOS, generate_transactions, simulate_labels


@pytest.fixture(scope="module")
def batch() -> pa.Table:
    return generate_transactions(50_000, seed=7)


def test_columns_follow_the_schema(batch: pa.Table) -> None:
    assert batch.column_names == [
        schema.TRANSACTION_ID,
        schema.CARD_ID,
        schema.EVENT_TIMESTAMP,
        schema.LABEL,
        *schema.FEATURE_NAMES,
    ]
    assert batch.schema.field(schema.EVENT_TIMESTAMP).type == pa.timestamp("us", tz="UTC")
    assert all(batch.schema.field(n).type == pa.float32() for n in schema.FEATURE_NAMES)


def test_deterministic_by_seed(batch: pa.Table) -> None:
    assert generate_transactions(50_000, seed=7).equals(batch)
    assert not generate_transactions(50_000, seed=8).equals(batch)


def test_fraud_is_rare_ids_unique_and_time_ordered(batch: pa.Table) -> None:
    rate = batch.column(schema.LABEL).to_numpy().mean()
    assert 0.005 <= rate <= 0.02
    ids = batch.column(schema.TRANSACTION_ID).to_pylist()
    assert len(set(ids)) == len(ids)
    ts = batch.column(schema.EVENT_TIMESTAMP).cast(pa.int64()).to_numpy()
    assert np.all(np.diff(ts) >= 0)
    span_days = (ts[-1] - ts[0]) / 86_400e6
    assert span_days > 14  # spread over weeks


def test_values_respect_the_schema_ranges(batch: pa.Table) -> None:
    for spec in schema.FEATURES:
        col = batch.column(spec.name).to_numpy()
        assert np.isfinite(col).all(), spec.name
        if spec.low is not None:
            assert col.min() >= spec.low, spec.name
        if spec.high is not None:
            assert col.max() <= spec.high, spec.name


def test_hour_of_day_matches_the_timestamp(batch: pa.Table) -> None:
    hours = [t.hour for t in batch.column(schema.EVENT_TIMESTAMP).to_pylist()[:500]]
    assert hours == [int(h) for h in batch.column("hour_of_day").to_numpy()[:500]]


def test_velocity_windows_are_nested(batch: pa.Table) -> None:
    c = [batch.column(f"txn_count_{w}").to_numpy() for w in ("10m", "1h", "6h", "24h", "7d")]
    for shorter, longer in itertools.pairwise(c):
        assert np.all(shorter <= longer)


def test_fraud_is_learnable_but_not_trivial(batch: pa.Table) -> None:
    # A single strong signal separates the classes only partly.
    y = batch.column(schema.LABEL).to_numpy().astype(bool)
    amount_ratio = batch.column("amount_to_card_mean_ratio").to_numpy()
    assert np.median(amount_ratio[y]) > 1.2 * np.median(amount_ratio[~y])
    assert np.mean(amount_ratio[y] > np.quantile(amount_ratio[~y], 0.99)) < 0.5


@pytest.mark.parametrize(
    ("scenario", "feature", "direction"),
    [
        ("amount_inflation", "amount", 1.3),
        ("merchant_mix", "merchant_category_code", 1.5),
        ("new_market", "latent_v40", None),
    ],
)
def test_scenarios_shift_the_data(batch: pa.Table, scenario: str, feature: str, direction: float | None) -> None:
    shifted = generate_transactions(50_000, seed=7, scenario=scenario)
    base = batch.column(feature).to_numpy().mean()
    moved = shifted.column(feature).to_numpy().mean()
    if direction is None:
        assert moved - base > 0.5
    else:
        assert moved > direction * base


def test_fraud_surge_triples_fraud() -> None:
    surge = generate_transactions(50_000, seed=7, scenario="fraud_surge").column(schema.LABEL).to_numpy().mean()
    assert 0.02 < surge < 0.05
    assert set(SCENARIOS) >= {"baseline", "amount_inflation", "merchant_mix", "fraud_surge", "new_market"}


@pytest.mark.parametrize("hour", [0, 5, 13.5, 22])
def test_the_time_of_day_of_the_start_changes_neither_the_fraud_rate_nor_its_hours(hour: float) -> None:
    """The daily profile is a clock profile: a window that starts in the afternoon gets the
    same night fraud as one that starts at midnight (the demo's canary traffic once did not)."""
    start = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(hours=hour)
    t = generate_transactions(60_000, seed=3, start=start, days=2)
    ts = t.column(schema.EVENT_TIMESTAMP).cast(pa.int64()).to_numpy()
    y = t.column(schema.LABEL).to_numpy()
    assert ts.min() >= int(start.timestamp() * 1e6) and ts.max() < int((start + timedelta(days=2)).timestamp() * 1e6)
    clock = (ts // 3_600_000_000) % 24
    night = clock < 6
    assert 0.008 < y.mean() < 0.013  # the baseline rate, whatever the start
    assert y[night].mean() > 3 * y[~night].mean()  # fraud favours the night on the clock
    np.testing.assert_array_equal(t.column("hour_of_day").to_numpy(), clock)


def test_window_and_bad_arguments() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    day = generate_transactions(1_000, start=start, days=1)
    ts = day.column(schema.EVENT_TIMESTAMP).to_pylist()
    assert min(ts) >= start and max(ts) < datetime(2026, 11, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="n_rows"):
        generate_transactions(0)
    with pytest.raises(ValueError, match="unknown scenario"):
        generate_transactions(10, scenario="nope")
    with pytest.raises(ValueError, match="timezone"):
        generate_transactions(10, start=datetime(2026, 1, 1))


def test_late_labels_arrive_after_the_event(batch: pa.Table) -> None:
    labels = simulate_labels(batch.slice(0, 1000))
    ev = batch.column(schema.EVENT_TIMESTAMP).slice(0, 1000).cast(pa.int64()).to_numpy()
    lab = labels.column("label_timestamp").cast(pa.int64()).to_numpy()
    assert np.all(lab >= ev)
    assert labels.column(schema.TRANSACTION_ID).equals(batch.column(schema.TRANSACTION_ID).slice(0, 1000))
