"""Training sets from Feast are point-in-time correct and follow the training-set contract.

A real Feast repository (DuckDB offline store over the exported Parquet sources, SQLite
online store) over a small generated warehouse; no mocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fraudops import schema

N_ROWS = 3_000
N_CARDS = 60  # few cards, so each has a long history to leak from


@pytest.fixture(scope="module")
def feature_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, pa.Table]]:
    """Settings of an applied local repository, and the generated transactions behind it."""
    from fraudops.data.generate import generate_transactions
    from fraudops.data.warehouse import open_warehouse
    from fraudops.features.store import apply, export_sources
    from fraudops.settings import get_settings

    home = tmp_path_factory.mktemp("pit") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDOPS_HOME", str(home))
        mp.setenv("FRAUDOPS_PROFILE", "local")
        mp.delenv("FRAUDOPS_REDIS_URL", raising=False)
        get_settings.cache_clear()
        settings = get_settings()
        table = generate_transactions(N_ROWS, seed=11, n_cards=N_CARDS, days=14)
        wh = open_warehouse(settings)
        try:
            wh.write_transactions(table, replace=True)
        finally:
            wh.close()
        export_sources(settings)
        apply(settings)
        yield settings, table
    get_settings.cache_clear()


def test_training_set_has_every_feature_in_schema_order_with_generator_values(
    feature_repo: tuple[Any, pa.Table],
) -> None:
    from fraudops.features.store import IDENTITY_COLUMNS, training_set

    settings, generated = feature_repo
    ts = training_set(settings)

    assert ts.column_names == [*IDENTITY_COLUMNS, *schema.FEATURE_NAMES]
    assert ts.num_rows == generated.num_rows
    assert ts.schema.field(schema.TRANSACTION_ID).type == pa.string()
    assert ts.schema.field(schema.CARD_ID).type == pa.int64()
    assert ts.schema.field(schema.EVENT_TIMESTAMP).type == pa.timestamp("us", tz="UTC")
    assert ts.schema.field(schema.LABEL).type == pa.int8()
    assert all(ts.schema.field(n).type == pa.float32() for n in schema.FEATURE_NAMES)

    # Each transaction's own card row is stamped at its own time, so every joined value
    # is exactly what the generator wrote for that transaction.
    expected = generated.sort_by([(schema.EVENT_TIMESTAMP, "ascending"), (schema.TRANSACTION_ID, "ascending")])
    for name in IDENTITY_COLUMNS:
        assert ts.column(name).equals(expected.column(name).cast(ts.schema.field(name).type)), name
    got = np.column_stack([ts.column(n).to_numpy() for n in schema.FEATURE_NAMES])
    want = np.column_stack([expected.column(n).to_numpy() for n in schema.FEATURE_NAMES])
    np.testing.assert_array_equal(got, want)


def test_a_feature_stamped_after_the_label_is_never_joined(feature_repo: tuple[Any, pa.Table]) -> None:
    """Labels stamped one second before their transaction must not see that transaction's rows."""
    import pandas as pd

    from fraudops.features.store import training_set

    settings, generated = feature_repo
    frame = generated.select([schema.TRANSACTION_ID, schema.CARD_ID, schema.EVENT_TIMESTAMP, schema.LABEL]).to_pandas()
    frame[schema.EVENT_TIMESTAMP] = frame[schema.EVENT_TIMESTAMP] - pd.Timedelta(seconds=1)
    ts = training_set(settings, frame, allow_missing=True).to_pandas()

    # The transaction's own features are stamped after its (shifted) label: never joined.
    for name in schema.TRANSACTION_FEATURE_NAMES:
        assert ts[name].isna().all(), f"{name} leaked from after the label's timestamp"

    # Card features: the newest card row at or before the label time, computed here
    # independently of Feast; rows stamped later (the transaction's own) never appear.
    cards = generated.select([schema.CARD_ID, schema.EVENT_TIMESTAMP, *schema.CARD_FEATURE_NAMES]).to_pandas()
    cards = cards.rename(columns={schema.EVENT_TIMESTAMP: "feature_ts"}).sort_values("feature_ts")
    labels = ts[[schema.TRANSACTION_ID, schema.CARD_ID, schema.EVENT_TIMESTAMP]].sort_values(schema.EVENT_TIMESTAMP)
    expected = pd.merge_asof(
        labels,
        cards,
        left_on=schema.EVENT_TIMESTAMP,
        right_on="feature_ts",
        by=schema.CARD_ID,
        direction="backward",
        tolerance=pd.Timedelta(days=90),
    ).set_index(schema.TRANSACTION_ID)
    got = ts.set_index(schema.TRANSACTION_ID).loc[expected.index]
    assert (
        expected["feature_ts"].dropna() <= expected.loc[expected["feature_ts"].notna(), schema.EVENT_TIMESTAMP]
    ).all()
    for name in schema.CARD_FEATURE_NAMES:
        np.testing.assert_array_equal(
            got[name].to_numpy(dtype=np.float64), expected[name].to_numpy(dtype=np.float64), err_msg=name
        )
    # The first transaction of each card has no earlier row: nothing to join, not a later one.
    firsts = generated.to_pandas().groupby(schema.CARD_ID)[schema.TRANSACTION_ID].first()
    assert got.loc[firsts.to_numpy(), list(schema.CARD_FEATURE_NAMES)].isna().all().all()


def test_one_card_between_two_of_its_transactions(feature_repo: tuple[Any, pa.Table]) -> None:
    """The plainest case: a label between a card's two rows gets the first row's values."""
    import pandas as pd

    from fraudops.features.store import training_set

    settings, generated = feature_repo
    frame = generated.to_pandas()
    card = frame[schema.CARD_ID].value_counts().index[0]
    rows = frame[frame[schema.CARD_ID] == card].sort_values(schema.EVENT_TIMESTAMP)
    first, second = rows.iloc[0], rows.iloc[1]
    assert first[schema.EVENT_TIMESTAMP] < second[schema.EVENT_TIMESTAMP]
    assert (
        first["card_age_days"] != second["card_age_days"]
        or first["card_avg_amount_30d"] != second["card_avg_amount_30d"]
    )
    label_time = first[schema.EVENT_TIMESTAMP] + (second[schema.EVENT_TIMESTAMP] - first[schema.EVENT_TIMESTAMP]) / 2
    entity = pd.DataFrame(
        {
            # The second transaction's id, labelled before it happened.
            schema.TRANSACTION_ID: [second[schema.TRANSACTION_ID]],
            schema.CARD_ID: [card],
            schema.EVENT_TIMESTAMP: [label_time],
            schema.LABEL: pd.Series([0], dtype="int8"),
        }
    )
    row = training_set(settings, entity, allow_missing=True).to_pylist()[0]
    for name in schema.CARD_FEATURE_NAMES:
        assert row[name] == pytest.approx(float(first[name])), name
    assert row["amount"] is None  # the transaction itself is later than the label


def test_missing_features_are_an_error_unless_allowed(feature_repo: tuple[Any, pa.Table]) -> None:
    import pandas as pd

    from fraudops.features.store import FeatureStoreError, training_set

    settings, generated = feature_repo
    entity = generated.slice(0, 5).select([schema.TRANSACTION_ID, schema.CARD_ID, schema.EVENT_TIMESTAMP]).to_pandas()
    entity.loc[0, schema.TRANSACTION_ID] = "tx-not-in-the-warehouse"
    with pytest.raises(FeatureStoreError, match="no value for some features"):
        training_set(settings, entity)
    out = training_set(settings, entity, allow_missing=True)
    assert out.num_rows == 5
    assert out.column("amount").null_count == 1

    with pytest.raises(ValueError, match="lacks columns: card_id"):
        training_set(settings, entity.drop(columns=[schema.CARD_ID]))
    naive = entity.assign(**{schema.EVENT_TIMESTAMP: entity[schema.EVENT_TIMESTAMP].dt.tz_localize(None)})
    with pytest.raises(ValueError, match="timezone-aware"):
        training_set(settings, naive)
    late = entity.assign(**{schema.EVENT_TIMESTAMP: entity[schema.EVENT_TIMESTAMP] + pd.Timedelta(days=365)})
    # A year later the card rows are older than the view's TTL: not joined, so an error.
    with pytest.raises(FeatureStoreError):
        training_set(settings, late)


def test_training_set_window_from_the_warehouse(feature_repo: tuple[Any, pa.Table], tmp_path: Path) -> None:
    from fraudops.features.store import training_set, write_training_set

    settings, generated = feature_repo
    t0 = generated.column(schema.EVENT_TIMESTAMP)[0].as_py()
    start, end = t0 + timedelta(days=3), t0 + timedelta(days=5)
    ts = training_set(settings, start=start, end=end)
    times = ts.column(schema.EVENT_TIMESTAMP).to_pylist()
    assert ts.num_rows > 0 and min(times) >= start and max(times) < end
    path = write_training_set(ts, tmp_path / "train.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(path).equals(ts)
