"""The transactions warehouse: DuckDB on the embedded default, Snowflake in production.

Both implement :class:`Warehouse`, so every caller (the CLI, the DAGs, the feature
export) is the same in both profiles. Values always travel as bound parameters, never
formatted into SQL; identifiers (table names) are checked against a strict pattern
because SQL cannot bind them.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fraudops import schema

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops.settings import Settings

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def checked_identifier(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid table name: {name!r}")
    return name


def transactions_ddl_columns() -> list[tuple[str, str]]:
    """Columns of the transactions table, in order, with portable SQL types."""
    cols = [
        (schema.TRANSACTION_ID, "VARCHAR"),
        (schema.CARD_ID, "BIGINT"),
        (schema.EVENT_TIMESTAMP, "TIMESTAMP WITH TIME ZONE"),
        (schema.LABEL, "TINYINT"),
    ]
    cols += [(name, "FLOAT") for name in schema.FEATURE_NAMES]
    return cols


class Warehouse(Protocol):
    """What the lifecycle needs from a warehouse."""

    def write_transactions(self, table: pa.Table, *, replace: bool = False) -> int:
        """Append (or replace with) ``table``; returns the rows written."""
        ...

    def read_transactions(self, start: datetime | None = None, end: datetime | None = None) -> pa.Table:
        """Transactions with ``start <= event_timestamp < end`` (open bounds when None)."""
        ...

    def count_transactions(self, start: datetime | None = None, end: datetime | None = None) -> int: ...

    def close(self) -> None: ...


def _window_clause(start: datetime | None, end: datetime | None, placeholder: str) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    if start is not None:
        conds.append(f"{schema.EVENT_TIMESTAMP} >= {placeholder}")
        params.append(start)
    if end is not None:
        conds.append(f"{schema.EVENT_TIMESTAMP} < {placeholder}")
        params.append(end)
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


class DuckDBWarehouse:
    """A single DuckDB file: the embedded default."""

    def __init__(self, path: Path | str, table: str = "TRANSACTIONS") -> None:
        import duckdb

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = checked_identifier(table)
        self._con = duckdb.connect(str(self.path))
        self._con.execute("SET TimeZone = 'UTC'")

    def _ensure(self) -> None:
        cols = ", ".join(f'"{c}" {t}' for c, t in transactions_ddl_columns())
        self._con.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({cols})")

    def write_transactions(self, table: pa.Table, *, replace: bool = False) -> int:
        _check_columns(table)
        self._con.begin()
        try:
            if replace:
                self._con.execute(f"DROP TABLE IF EXISTS {self.table}")
            self._ensure()
            self._con.register("_incoming", table)
            names = ", ".join(f'"{c}"' for c, _ in transactions_ddl_columns())
            self._con.execute(f"INSERT INTO {self.table} ({names}) SELECT {names} FROM _incoming")
            self._con.unregister("_incoming")
            self._con.commit()
        except Exception:
            self._con.rollback()
            raise
        return int(table.num_rows)

    def read_transactions(self, start: datetime | None = None, end: datetime | None = None) -> pa.Table:
        self._ensure()
        where, params = _window_clause(start, end, "?")
        sql = f"SELECT * FROM {self.table}{where} ORDER BY {schema.EVENT_TIMESTAMP}, {schema.TRANSACTION_ID}"
        return self._con.sql(sql, params=params).to_arrow_table()

    def count_transactions(self, start: datetime | None = None, end: datetime | None = None) -> int:
        self._ensure()
        where, params = _window_clause(start, end, "?")
        row = self._con.execute(f"SELECT count(*) FROM {self.table}{where}", params).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._con.close()


class SnowflakeWarehouse:
    """Snowflake through ``snowflake-connector-python`` (tested against ``fakesnow``)."""

    def __init__(self, connection: Any, table: str = "TRANSACTIONS") -> None:
        self._con = connection
        self.table = checked_identifier(table)

    @classmethod
    def connect(cls, settings: Settings) -> SnowflakeWarehouse:
        import snowflake.connector

        sf = settings.snowflake
        con = snowflake.connector.connect(
            account=sf.account,
            user=sf.user,
            password=sf.password.get_secret_value(),
            role=sf.role or None,
            warehouse=sf.warehouse or None,
            database=sf.database,
            schema=sf.schema_,
        )
        return cls(con, settings.transactions_table)

    def _ensure(self) -> None:
        cols = ", ".join(f"{c} {'TIMESTAMP_TZ' if 'TIME ZONE' in t else t}" for c, t in transactions_ddl_columns())
        self._con.cursor().execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({cols})")

    def write_transactions(self, table: pa.Table, *, replace: bool = False) -> int:
        from snowflake.connector.pandas_tools import write_pandas

        _check_columns(table)
        cur = self._con.cursor()
        if replace:
            cur.execute(f"DROP TABLE IF EXISTS {self.table}")
        self._ensure()
        frame = table.select([c for c, _ in transactions_ddl_columns()]).to_pandas()
        frame.columns = [c.upper() for c in frame.columns]
        ok, _, nrows, _ = write_pandas(self._con, frame, self.table, quote_identifiers=False)
        if not ok:
            raise RuntimeError(f"Snowflake load into {self.table} failed")
        return int(nrows)

    def read_transactions(self, start: datetime | None = None, end: datetime | None = None) -> pa.Table:
        import pyarrow as pa

        self._ensure()
        where, params = _window_clause(start, end, "%s")
        cur = self._con.cursor()
        cur.execute(
            f"SELECT * FROM {self.table}{where} ORDER BY {schema.EVENT_TIMESTAMP}, {schema.TRANSACTION_ID}",
            params,
        )
        names = [d[0].lower() for d in cur.description]
        rows = cur.fetchall()
        if not rows:
            return _empty_table()
        cols = list(zip(*rows, strict=True))
        return _conform(pa.table(dict(zip(names, cols, strict=True))))

    def count_transactions(self, start: datetime | None = None, end: datetime | None = None) -> int:
        self._ensure()
        where, params = _window_clause(start, end, "%s")
        cur = self._con.cursor()
        cur.execute(f"SELECT count(*) FROM {self.table}{where}", params)
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._con.close()


def transactions_arrow_schema() -> pa.Schema:
    import pyarrow as pa

    fields = [
        pa.field(schema.TRANSACTION_ID, pa.string()),
        pa.field(schema.CARD_ID, pa.int64()),
        pa.field(schema.EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC")),
        pa.field(schema.LABEL, pa.int8()),
    ]
    fields += [pa.field(name, pa.float32()) for name in schema.FEATURE_NAMES]
    return pa.schema(fields)


def _empty_table() -> pa.Table:
    return transactions_arrow_schema().empty_table()


def _conform(table: pa.Table) -> pa.Table:
    """Cast a table read back from a warehouse to the canonical Arrow schema."""
    target = transactions_arrow_schema()
    return table.select(target.names).cast(target)


def _check_columns(table: pa.Table) -> None:
    expected = [c for c, _ in transactions_ddl_columns()]
    missing = [c for c in expected if c not in table.column_names]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ValueError(f"transactions table lacks columns: {shown}")


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse of the configured profile."""
    if settings.profile == "production":
        return SnowflakeWarehouse.connect(settings)
    return DuckDBWarehouse(settings.warehouse_path, settings.transactions_table)
