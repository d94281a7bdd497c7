"""Materialization into a real Redis server (started by the fixture) and online reads back.

The local profile with ``FRAUDOPS_REDIS_URL`` set uses Feast's Redis online store: the
same configuration and code path as production, against a real ``redis-server``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fraudops import schema

N_ROWS = 3_000
N_CARDS = 150


@pytest.fixture
def redis_repo(fraudops_home: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, pa.Table]]:
    """An applied local repository whose online store is the test's Redis server."""
    from fraudops.data.generate import generate_transactions
    from fraudops.data.warehouse import open_warehouse
    from fraudops.features.store import apply, export_sources
    from fraudops.settings import get_settings

    monkeypatch.setenv("FRAUDOPS_REDIS_URL", redis_url)
    get_settings.cache_clear()
    settings = get_settings()
    table = generate_transactions(N_ROWS, seed=5, n_cards=N_CARDS, days=10)
    wh = open_warehouse(settings)
    try:
        wh.write_transactions(table, replace=True)
    finally:
        wh.close()
    export_sources(settings)
    result = apply(settings)
    assert result.online_store == "redis"
    yield settings, table


def _latest_per_card(table: pa.Table, end: datetime | None = None) -> dict[int, dict[str, float]]:
    frame = table.to_pandas()
    if end is not None:
        frame = frame[frame[schema.EVENT_TIMESTAMP] <= end]
    latest = frame.sort_values(schema.EVENT_TIMESTAMP).groupby(schema.CARD_ID).tail(1)
    return {
        int(row[schema.CARD_ID]): {n: float(row[n]) for n in schema.CARD_FEATURE_NAMES}
        for row in latest.to_dict("records")
    }


def _window(table: pa.Table) -> tuple[datetime, datetime]:
    ts = table.column(schema.EVENT_TIMESTAMP)
    return ts[0].as_py(), ts[-1].as_py() + timedelta(seconds=1)


def _assert_online_equals(online: dict[int, dict[str, float]], expected: dict[int, dict[str, float]]) -> None:
    assert set(online) == set(expected)
    for card, values in expected.items():
        assert list(online[card]) == list(schema.CARD_FEATURE_NAMES)
        got = np.array([online[card][n] for n in schema.CARD_FEATURE_NAMES], dtype=np.float32)
        want = np.array([values[n] for n in schema.CARD_FEATURE_NAMES], dtype=np.float32)
        np.testing.assert_array_equal(got, want, err_msg=f"card {card}")


def _redis_client(settings: Any) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url)


def test_materialize_into_redis_and_read_back_the_latest_values(redis_repo: tuple[Any, pa.Table]) -> None:
    from fraudops.features.store import CardFeatureReader, materialize

    settings, table = redis_repo
    start, end = _window(table)
    result = materialize(settings, start, end)
    expected = _latest_per_card(table)
    assert result.online_store == "redis"
    assert result.rows == N_ROWS and result.keys == len(expected)

    client = _redis_client(settings)
    assert client.dbsize() == len(expected)  # one hash per card, nothing else

    reader = CardFeatureReader.open(settings)
    assert reader.backend == "redis"
    assert reader.feature_names == list(schema.CARD_FEATURE_NAMES)
    unknown = 999_999_999
    online = reader.get([*expected, unknown])
    assert unknown not in online
    _assert_online_equals(online, expected)


def test_materialize_twice_is_idempotent(redis_repo: tuple[Any, pa.Table]) -> None:
    from fraudops.features.store import CardFeatureReader, materialize

    settings, table = redis_repo
    start, end = _window(table)
    materialize(settings, start, end)
    client = _redis_client(settings)
    snapshot = {key: client.hgetall(key) for key in client.scan_iter()}
    first = CardFeatureReader.open(settings).get(_latest_per_card(table))

    again = materialize(settings, start, end)  # same window: no error, nothing changes
    assert again.keys == len(first)
    assert {key: client.hgetall(key) for key in client.scan_iter()} == snapshot
    _assert_online_equals(CardFeatureReader.open(settings).get(first), _latest_per_card(table))


def test_incremental_materialization_continues_where_the_last_ended(redis_repo: tuple[Any, pa.Table]) -> None:
    from fraudops.features.store import CardFeatureReader, materialize

    settings, table = redis_repo
    start, end = _window(table)
    middle = start + (end - start) / 2

    first = materialize(settings, None, middle, incremental=True)
    assert first.start == start  # first run: from the earliest exported event
    reader = CardFeatureReader.open(settings)
    _assert_online_equals(reader.get(_latest_per_card(table)), _latest_per_card(table, middle))

    second = materialize(settings, None, end, incremental=True)
    assert second.start == middle and second.end == end
    assert second.rows is not None and 0 < second.rows < N_ROWS
    _assert_online_equals(reader.get(_latest_per_card(table)), _latest_per_card(table))

    # Nothing new: an empty window, no error, same values.
    third = materialize(settings, None, end, incremental=True)
    assert third.start == end
    _assert_online_equals(reader.get(_latest_per_card(table)), _latest_per_card(table))


def test_materialize_before_apply_says_what_to_run(
    fraudops_home: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraudops.features.config import FeatureStoreConfigError
    from fraudops.features.store import materialize
    from fraudops.settings import get_settings

    monkeypatch.setenv("FRAUDOPS_REDIS_URL", redis_url)
    get_settings.cache_clear()
    with pytest.raises(FeatureStoreConfigError, match="fraudops features apply"):
        materialize(get_settings(), None, datetime.now().astimezone(), incremental=True)
