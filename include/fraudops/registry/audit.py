"""The alias audit log and the registry lock, both kept in the registry's own database.

Where the history lives, and why
--------------------------------
Alias moves are recorded in a table, ``fraudops_alias_history``, inside the MLflow
backend database itself (SQLite under ``FRAUDOPS_HOME`` on the embedded default,
PostgreSQL in production), reached through SQLAlchemy with the very URI MLflow uses:

* it lives exactly where the aliases live: same backups, same retention, same access
  control, and nothing new to deploy or configure in either profile;
* it is durable and transactional, unlike MLflow tags (which are mutable key-value pairs
  that anyone can overwrite, with no order and no time);
* it is append-only by construction: the code only inserts, and database triggers refuse
  ``UPDATE``, ``DELETE`` (and ``TRUNCATE`` on PostgreSQL), so a bug or a careless script
  cannot rewrite the past;
* MLflow ignores tables it does not own: its schema check compares Alembic revisions,
  and its "all tables exist" check is a subset test.

The history is therefore available only when the tracking URI is a database URI. An
MLflow tracking server over HTTP hides its database; such a deployment must point
``FRAUDOPS_MLFLOW_TRACKING_URI`` at the database for the registry commands.

Serializing alias moves
-----------------------
Every alias move happens inside :meth:`AuditLog.locked`, which serializes movers of one
registered model across processes and machines:

* PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``) keyed by the
  model name, held by the same transaction that then inserts the history rows; commit
  releases it, and so does a crashed client's dropped connection. ``lock_timeout`` bounds
  the wait.
* SQLite: ``BEGIN IMMEDIATE`` on a small lock database per model next to ``mlflow.db`` (the reserved
  lock of SQLite itself, released when the holder closes or dies). It cannot be taken on
  ``mlflow.db`` directly: MLflow writes the alias through its own connection, which would
  then wait on us. A SQLite store serves one machine, so a per-file lock is enough.

The caller re-reads the aliases inside the lock before deciding anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from fraudops.registry.errors import RegistryConfigError, RegistryLockTimeout, RegistryUnavailable
from fraudops.registry.history import AliasEvent, AliasMove, as_utc

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

TABLE_NAME = "fraudops_alias_history"
DEFAULT_LOCK_TIMEOUT_S = 60.0

_metadata = sa.MetaData()
alias_history = sa.Table(
    TABLE_NAME,
    _metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("alias", sa.String(256), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_version", sa.String(32), nullable=True),
    sa.Column("to_version", sa.String(32), nullable=True),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("operation_id", sa.String(36), nullable=False),
    # Always UTC. SQLite keeps it as naive text, PostgreSQL as timestamptz.
    sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("action IN ('set', 'move', 'delete')", name="ck_fraudops_alias_history_action"),
    sa.Index("ix_fraudops_alias_history_model_alias", "model_name", "alias", "id"),
)

_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS {TABLE_NAME}_no_update BEFORE UPDATE ON {TABLE_NAME} "
    f"BEGIN SELECT RAISE(ABORT, '{TABLE_NAME} is append-only'); END",
    f"CREATE TRIGGER IF NOT EXISTS {TABLE_NAME}_no_delete BEFORE DELETE ON {TABLE_NAME} "
    f"BEGIN SELECT RAISE(ABORT, '{TABLE_NAME} is append-only'); END",
)
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {TABLE_NAME}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '{TABLE_NAME} is append-only';
END $$
"""
_PG_TRIGGERS = {
    f"{TABLE_NAME}_no_update_delete": f"BEFORE UPDATE OR DELETE ON {TABLE_NAME} FOR EACH ROW",
    f"{TABLE_NAME}_no_truncate": f"BEFORE TRUNCATE ON {TABLE_NAME} FOR EACH STATEMENT",
}

# Engines per process and URI: an engine must not cross a fork, and creating one per call
# would open a pool per call.
_ENGINES: dict[tuple[int, str], Engine] = {}
_SCHEMA_READY: set[tuple[int, str]] = set()


def audit_db_uri(tracking_uri: str) -> str:
    """The SQLAlchemy URI of the database holding the registry (the MLflow backend store).

    Raises:
        RegistryConfigError: the URI is not a SQLite or PostgreSQL database.
    """
    scheme = tracking_uri.split(":", 1)[0].lower()
    dialect = scheme.split("+", 1)[0]
    if dialect in ("sqlite", "postgresql", "postgres"):
        if dialect == "postgres":  # SQLAlchemy 2 knows only the long name
            return "postgresql" + tracking_uri[len("postgres") :]
        return tracking_uri
    if dialect in ("mysql", "mssql"):
        raise RegistryConfigError(f"the alias history and lock support SQLite and PostgreSQL registries, not {dialect}")
    raise RegistryConfigError(
        f"the registry's alias history lives in the MLflow backend database, but the tracking URI "
        f"{_redact(tracking_uri)!r} is not a database URI; set FRAUDOPS_MLFLOW_TRACKING_URI to the "
        "database (postgresql://user@host/db, or sqlite:///path/mlflow.db)"
    )


def _redact(uri: str) -> str:
    try:
        return sa.engine.make_url(uri).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (http://...): drop any credentials all the same
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(uri)
        netloc = parts.netloc.rsplit("@", maxsplit=1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _engine(uri: str) -> Engine:
    key = (os.getpid(), uri)
    engine = _ENGINES.get(key)
    if engine is None:
        url = sa.engine.make_url(uri)
        if url.get_backend_name() == "sqlite":
            # Wait for MLflow's own writers instead of failing with "database is locked".
            engine = sa.create_engine(url, connect_args={"timeout": 30})
        else:
            # A host that does not answer fails in seconds, not after the OS's TCP timeout.
            args = {"connect_timeout": 10} if url.get_driver_name() == "psycopg2" else {}
            try:
                engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=args)
            except ModuleNotFoundError as exc:
                # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the project ships psycopg2.
                raise RegistryConfigError(
                    f"the database driver {exc.name!r} for {_redact(uri)} is not installed; name the "
                    "driver in the URI (postgresql+psycopg2://...) or install it"
                ) from exc
        _ENGINES[key] = engine
    return engine


def _lock_key(model_name: str) -> int:
    # A stable signed 64-bit key (Python's hash() is salted per process).
    digest = hashlib.sha256(f"fraudops.registry:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _sqlite_lock(path: Path, timeout_s: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RegistryLockTimeout(
                    f"another alias move held the registry lock ({path}) for more than {timeout_s:g} s"
                ) from exc
            raise
        yield
    finally:
        conn.close()  # ends the (empty) transaction: the lock is released


class LockedSession:
    """What a holder of the registry lock may do: read the history and append to it.

    Appended rows become visible (and, on PostgreSQL, the lock is released) on :meth:`commit`.
    """

    def __init__(self, conn: Connection, dialect: str) -> None:
        self._conn = conn
        self._dialect = dialect

    def now(self) -> datetime:
        """The time of a move, in UTC.

        PostgreSQL's ``clock_timestamp()`` (not ``now()``, the transaction's start, which
        precedes the lock wait): one clock for every machine that moves aliases. SQLite
        serves one machine, whose clock it is.
        """
        if self._dialect == "postgresql":
            value = self._conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
            return as_utc(value)
        return datetime.now(UTC)

    def events(self, model_name: str) -> list[AliasEvent]:
        """The model's history, as committed before this lock was taken."""
        return _read_events(self._conn, model_name, None)

    def append(
        self,
        model_name: str,
        moves: Sequence[AliasMove],
        *,
        actor: str,
        reason: str,
        operation: str,
        moved_at: datetime | None = None,
    ) -> list[AliasEvent]:
        """Insert one row per move (one operation id for all of them); returns the events."""
        if not moves:
            return []
        when = as_utc(moved_at) if moved_at is not None else self.now()
        op_id = str(uuid.uuid4())
        stored_time = when if self._dialect == "postgresql" else when.replace(tzinfo=None)
        out: list[AliasEvent] = []
        for move in moves:
            row_id = self._conn.execute(
                alias_history.insert()
                .values(
                    model_name=model_name,
                    alias=move.alias,
                    action=move.action,
                    from_version=move.from_version,
                    to_version=move.to_version,
                    actor=actor,
                    reason=reason,
                    operation=operation,
                    operation_id=op_id,
                    moved_at=stored_time,
                )
                .returning(alias_history.c.id)
            ).scalar_one()
            out.append(
                AliasEvent(
                    int(row_id),
                    model_name,
                    move.alias,
                    move.action,
                    move.from_version,
                    move.to_version,
                    actor,
                    reason,
                    operation,
                    op_id,
                    when,
                )
            )
        return out

    def abort_writes(self) -> None:
        """Give up the uncommitted rows, keeping the lock (never raises: it runs on error paths).

        SQLite rolls back now: its open write transaction would block MLflow's writes to the
        same file, and the lock is held by another connection. PostgreSQL keeps its
        transaction, and with it the lock, until the ``locked`` block exits (a failed
        transaction blocks nobody).
        """
        if self._dialect == "postgresql":
            return
        try:
            if self._conn.in_transaction():
                self._conn.rollback()
        except Exception:
            log.exception("rolling back the alias history transaction failed")

    def commit(self) -> None:
        """Make the appended rows durable (on PostgreSQL this also releases the lock)."""
        self._conn.commit()


def _read_events(conn: Connection, model_name: str | None, alias: str | None) -> list[AliasEvent]:
    query = sa.select(alias_history).order_by(alias_history.c.id)
    if model_name is not None:
        query = query.where(alias_history.c.model_name == model_name)
    if alias is not None:
        query = query.where(alias_history.c.alias == alias)
    return [
        AliasEvent(
            id=int(r.id),
            model_name=r.model_name,
            alias=r.alias,
            action=r.action,
            from_version=r.from_version,
            to_version=r.to_version,
            actor=r.actor,
            reason=r.reason,
            operation=r.operation,
            operation_id=r.operation_id,
            moved_at=as_utc(r.moved_at),
        )
        for r in conn.execute(query)
    ]


class AuditLog:
    """The append-only alias history and the registry lock of one backend database."""

    def __init__(self, db_uri: str, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.db_uri = audit_db_uri(db_uri)
        self.lock_timeout_s = lock_timeout_s
        url = sa.engine.make_url(self.db_uri)
        self.dialect = url.get_backend_name()
        if self.dialect == "sqlite" and (not url.database or url.database == ":memory:"):
            raise RegistryConfigError("an in-memory SQLite registry cannot be shared or locked; use a file")

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of this process."""
        return _engine(self.db_uri)

    def sqlite_lock_path(self, model_name: str) -> Path:
        """The lock database of ``model_name``, next to a SQLite registry (one per model, as on PostgreSQL)."""
        database = sa.engine.make_url(self.db_uri).database
        assert database is not None
        key = hashlib.sha256(model_name.encode()).hexdigest()[:16]
        return Path(database).with_name(f"{Path(database).name}.fraudops-registry-{key}.lock")

    def check_reachable(self) -> None:
        """Fail fast with :class:`RegistryUnavailable` when a server database does not answer.

        (A SQLite file needs no server; opening it would create it.)
        """
        if self.dialect == "sqlite":
            return
        with self._connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except sa.exc.OperationalError as exc:
            raise RegistryUnavailable(f"cannot reach the registry database {_redact(self.db_uri)}: {exc.orig}") from exc

    def _ensure_schema(self) -> None:
        """Create the table and its append-only triggers once per process (idempotent)."""
        key = (os.getpid(), self.db_uri)
        if key in _SCHEMA_READY:
            return
        with self._connect() as conn:
            if self.dialect == "postgresql":
                # Two first-time movers must not race on the DDL (SQLite callers hold the file lock).
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key("__schema__"))))
            _metadata.create_all(conn, checkfirst=True)
            if self.dialect == "postgresql":
                conn.execute(sa.text(_PG_FUNCTION))
                for name, spec in _PG_TRIGGERS.items():
                    exists = conn.execute(
                        sa.text("SELECT 1 FROM pg_trigger WHERE tgname = :n AND NOT tgisinternal"), {"n": name}
                    ).first()
                    if exists is None:
                        conn.execute(
                            sa.text(f"CREATE TRIGGER {name} {spec} EXECUTE FUNCTION {TABLE_NAME}_append_only()")
                        )
            else:
                for ddl in _SQLITE_TRIGGERS:
                    conn.execute(sa.text(ddl))
            conn.commit()
        _SCHEMA_READY.add(key)

    @contextmanager
    def locked(self, model_name: str) -> Iterator[LockedSession]:
        """Hold the registry lock of ``model_name`` for the block; yields a session.

        Anything the block appended but did not commit is rolled back on exit.

        Raises:
            RegistryLockTimeout: the lock was not obtained within ``lock_timeout_s``.
            RegistryUnavailable: the database cannot be reached.
        """
        if self.dialect == "postgresql":
            self._ensure_schema()
            with self._connect() as conn:
                try:
                    # SET LOCAL: the bound ends with the transaction; the lock is an
                    # advisory lock, which lock_timeout covers like any other.
                    timeout_ms = int(self.lock_timeout_s * 1000)
                    conn.execute(sa.text(f"SET LOCAL lock_timeout = {timeout_ms}"))
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(model_name))))
                except sa.exc.OperationalError as exc:
                    conn.rollback()
                    if "lock timeout" in str(exc).lower():
                        raise RegistryLockTimeout(
                            f"another alias move of {model_name!r} held the registry lock for more than "
                            f"{self.lock_timeout_s:g} s"
                        ) from exc
                    raise
                try:
                    yield LockedSession(conn, self.dialect)
                finally:
                    if conn.in_transaction():
                        conn.rollback()
        else:
            with _sqlite_lock(self.sqlite_lock_path(model_name), self.lock_timeout_s):
                self._ensure_schema()
                with self._connect() as conn:
                    try:
                        yield LockedSession(conn, self.dialect)
                    finally:
                        if conn.in_transaction():
                            conn.rollback()

    def events(self, model_name: str | None = None, alias: str | None = None) -> list[AliasEvent]:
        """The recorded moves, oldest first (none when nothing was ever recorded)."""
        with self._connect() as conn:
            if not sa.inspect(conn).has_table(TABLE_NAME):
                return []
            return _read_events(conn, model_name, alias)
