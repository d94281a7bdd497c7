"""The warehouse interface against DuckDB and against Snowflake's connector on fakesnow."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraudops import schema
from fraudops.data.generate import generate_transactions
from fraudops.data.warehouse import DuckDBWarehouse, SnowflakeWarehouse, Warehouse, checked_identifier

START = datetime(2026, 9, 1, tzinfo=UTC)
CUT = datetime(2026, 9, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def batch() -> pa.Table:
    return generate_transactions(600, seed=3, days=4)


@pytest.fixture(params=["duckdb", "snowflake"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        wh: Any = DuckDBWarehouse(tmp_path / "w.duckdb")
        yield wh
        wh.close()
        return
    import fakesnow
    import snowflake.connector

    with fakesnow.patch():
        con = snowflake.connector.connect(database="FRAUDOPS", schema="PUBLIC")
        wh = SnowflakeWarehouse(con)
        yield wh
        wh.close()


def test_round_trip_and_window(warehouse: Warehouse, batch: pa.Table) -> None:
    assert warehouse.write_transactions(batch, replace=True) == batch.num_rows
    assert warehouse.count_transactions() == batch.num_rows
    early = warehouse.read_transactions(START, CUT)
    expected = batch.filter(pc.less(batch[schema.EVENT_TIMESTAMP], pa.scalar(CUT)))
    assert early.num_rows == expected.num_rows > 0
    assert early.equals(expected)
    assert warehouse.count_transactions(CUT, None) == batch.num_rows - expected.num_rows


def test_append_then_replace(warehouse: Warehouse, batch: pa.Table) -> None:
    warehouse.write_transactions(batch.slice(0, 100), replace=True)
    warehouse.write_transactions(batch.slice(100, 50))
    assert warehouse.count_transactions() == 150
    warehouse.write_transactions(batch.slice(0, 10), replace=True)
    assert warehouse.count_transactions() == 10


def test_malicious_window_value_is_data_not_sql(warehouse: Warehouse, batch: pa.Table) -> None:
    warehouse.write_transactions(batch.slice(0, 20), replace=True)
    with pytest.raises(Exception):  # noqa: B017 - a bound string that is not a timestamp must fail, not execute
        warehouse.read_transactions("2026-09-01'; DROP TABLE TRANSACTIONS; --", None)  # type: ignore[arg-type]
    assert warehouse.count_transactions() == 20


def test_missing_columns_are_named(warehouse: Warehouse, batch: pa.Table) -> None:
    with pytest.raises(ValueError, match="amount"):
        warehouse.write_transactions(batch.drop_columns(["amount"]))


def test_table_names_are_checked() -> None:
    assert checked_identifier("TRANSACTIONS_2026") == "TRANSACTIONS_2026"
    for bad in ("t; DROP TABLE x", "1abc", "a b", ""):
        with pytest.raises(ValueError, match="table name"):
            checked_identifier(bad)
