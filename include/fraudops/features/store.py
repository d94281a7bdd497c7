"""The feature store: export, apply, materialize, training sets and online lookups.

A thin layer over Feast that fixes the choices the rest of fraudops relies on:

* one repository, built from the feature schema (:mod:`fraudops.features.definitions`);
* sources exported from the warehouse on the embedded default (Snowflake is read
  directly in production);
* materialization over an explicit time window, incremental on request, idempotent
  when repeated (the online store keeps, per card, the row with the newest event time,
  and an equal time is not rewritten);
* training sets from ``get_historical_features`` over the versioned feature service,
  shaped as the "Training set" contract (identity columns, then every feature in
  schema order as float32);
* online lookups of the card features that the feature service marks online, by card
  id, for the predictor.

Feast prints its progress to stdout; every Feast call here sends it to stderr instead,
so a command's stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudops import schema
from fraudops.features import definitions as defs
from fraudops.features.config import load_repo_config, uses_redis, write_feature_repo

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore

    from fraudops.data.warehouse import Warehouse
    from fraudops.settings import Settings

log = logging.getLogger(__name__)

IDENTITY_COLUMNS = (schema.TRANSACTION_ID, schema.CARD_ID, schema.EVENT_TIMESTAMP, schema.LABEL)


class FeatureStoreError(RuntimeError):
    """A feature-store step cannot run (nothing exported, nothing applied, bad window...)."""


@contextlib.contextmanager
def _feast_output_to_stderr() -> Iterator[None]:
    # Feast prints progress to stdout and its ibis backend warns about its own
    # deprecated calls: neither is ours to show.
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got {value.isoformat()}")
    return value.astimezone(UTC)


# --------------------------------------------------------------------------- store


def open_store(settings: Settings) -> FeatureStore:
    """The Feast store of the profile of ``settings`` (its ``feature_store.yaml`` must exist).

    Secrets in the file (``${VAR}``) are resolved from the environment here; a missing
    variable is a :class:`~fraudops.features.config.FeatureStoreConfigError` naming it.
    """
    from feast import FeatureStore

    config = load_repo_config(settings)
    return FeatureStore(repo_path=str(settings.feast_dir), config=config)


# -------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportResult:
    """The Parquet sources written for the local offline store."""

    rows: int
    card_path: Path
    transaction_path: Path
    min_timestamp: datetime
    max_timestamp: datetime
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path | datetime) else v for k, v in asdict(self).items()}


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, row_group_size=256_000)
    os.replace(tmp, path)  # readers never see a half-written source


def export_sources(
    settings: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    warehouse: Warehouse | None = None,
) -> ExportResult | None:
    """Export the warehouse's transactions in ``[start, end)`` as the local Parquet sources.

    The card source gets ``(card_id, event_timestamp, card_*)`` and the transaction
    source ``(transaction_id, event_timestamp, transaction features)``, one row per
    transaction. Open bounds (the default) export everything, which is what point-in-time
    joins want: a card's history before a window still counts. Returns ``None`` in
    production, where the sources read Snowflake directly.
    """
    if settings.profile == "production":
        log.info("production profile: the feature sources read Snowflake directly; nothing to export")
        return None
    from fraudops.data.warehouse import open_warehouse

    t0 = time.perf_counter()
    own = warehouse is None
    wh = open_warehouse(settings) if warehouse is None else warehouse
    try:
        table = wh.read_transactions(start, end)
    finally:
        if own:
            wh.close()
    if table.num_rows == 0:
        raise FeatureStoreError(
            "the warehouse holds no transactions in that window: run `fraudops data generate` first"
        )
    card_path = defs.card_source_path(settings)
    txn_path = defs.transaction_source_path(settings)
    card_path.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet_atomic(table.select([schema.CARD_ID, schema.EVENT_TIMESTAMP, *schema.CARD_FEATURE_NAMES]), card_path)
    _write_parquet_atomic(
        table.select([schema.TRANSACTION_ID, schema.EVENT_TIMESTAMP, *schema.TRANSACTION_FEATURE_NAMES]), txn_path
    )
    ts = table.column(schema.EVENT_TIMESTAMP)
    import pyarrow.compute as pc

    result = ExportResult(
        rows=table.num_rows,
        card_path=card_path,
        transaction_path=txn_path,
        min_timestamp=pc.min(ts).as_py(),
        max_timestamp=pc.max(ts).as_py(),
        seconds=time.perf_counter() - t0,
    )
    log.info(
        "exported %s transactions (%s .. %s) to %s",
        f"{result.rows:,}",
        result.min_timestamp.isoformat(),
        result.max_timestamp.isoformat(),
        card_path.parent,
    )
    return result


# --------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class ApplyResult:
    repo_dir: Path
    project: str
    feature_service: str
    objects: list[str]
    online_store: str
    offline_store: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "repo_dir": str(self.repo_dir)}


def apply(settings: Settings) -> ApplyResult:
    """Generate ``feature_store.yaml`` for the profile and register the repository's objects.

    Idempotent: applying the same definitions again changes nothing. The local sources
    need not exist yet (schemas are declared, not inferred); export before materializing.
    """
    write_feature_repo(settings)
    store = open_store(settings)
    repo = defs.build_repo(settings)
    with _feast_output_to_stderr():
        store.apply(repo.objects())
    names = [f"{type(o).__name__}:{o.name}" for o in repo.objects()]
    log.info("applied %d Feast objects to project %s", len(names), settings.feast_project)
    return ApplyResult(
        repo_dir=settings.feast_dir,
        project=settings.feast_project,
        feature_service=repo.feature_service.name,
        objects=names,
        online_store=str(store.config.online_store.type),
        offline_store=str(store.config.offline_store.type),
    )


# --------------------------------------------------------------------- materialize


@dataclass(frozen=True)
class MaterializeResult:
    """What a materialization did. ``rows``/``keys`` are counted on the local sources only."""

    start: datetime
    end: datetime
    incremental: bool
    rows: int | None  # source rows in the window
    keys: int | None  # distinct cards in the window (each written once, its newest row)
    seconds: float
    online_store: str

    @property
    def rows_per_second(self) -> float | None:
        return None if self.rows is None or self.seconds <= 0 else self.rows / self.seconds

    def to_dict(self) -> dict[str, Any]:
        out = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}
        out["rows_per_second"] = self.rows_per_second
        return out


def _card_source_stats(
    settings: Settings, start: datetime | None, end: datetime | None
) -> tuple[int, int, datetime | None]:
    """Rows, distinct cards and earliest time of the local card source in ``[start, end]``."""
    import duckdb

    path = defs.card_source_path(settings)
    if not path.is_file():
        raise FeatureStoreError(f"no exported card source at {path}: run `fraudops features export` (or apply) first")
    conds: list[str] = []
    params: list[object] = [str(path)]
    if start is not None:
        conds.append(f"{schema.EVENT_TIMESTAMP} >= ?")
        params.append(start)
    if end is not None:
        conds.append(f"{schema.EVENT_TIMESTAMP} <= ?")  # Feast's window is closed at both ends
        params.append(end)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(
            f"SELECT count(*), count(DISTINCT {schema.CARD_ID}), min({schema.EVENT_TIMESTAMP}) "
            f"FROM read_parquet(?){where}",
            params,
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    first = row[2].astimezone(UTC) if row[2] is not None else None
    return int(row[0]), int(row[1]), first


def materialize(
    settings: Settings,
    start: datetime | None,
    end: datetime,
    *,
    incremental: bool = False,
    store: FeatureStore | None = None,
) -> MaterializeResult:
    """Load the online feature views from the offline store into the online store.

    With ``incremental`` the window starts where the last materialization ended (or at
    ``start``, or at the earliest exported event, the first time). Repeating a window is
    idempotent: the online store keeps the newest row per card and does not rewrite an
    equal one.
    """
    end = _utc(end, "end")
    if start is not None:
        start = _utc(start, "start")
    store = store or open_store(settings)
    try:
        view = store.get_feature_view(defs.CARD_VIEW)
    except Exception as exc:  # FeatureViewNotFoundException and registry errors
        raise FeatureStoreError(
            f"{defs.CARD_VIEW} is not registered: run `fraudops features apply` first ({exc})"
        ) from None
    local = settings.profile != "production"
    if incremental and view.most_recent_end_time is not None:
        start = _utc(view.most_recent_end_time, "most_recent_end_time")
    if start is None:
        if not local:
            raise FeatureStoreError("the first materialization needs a start time (--start)")
        start = _card_source_stats(settings, None, None)[2]
        if start is None:
            raise FeatureStoreError("the exported card source is empty: nothing to materialize")
    if start > end:
        if incremental:
            log.info("already materialized up to %s; nothing to do before %s", start.isoformat(), end.isoformat())
            return MaterializeResult(start, end, True, 0, 0, 0.0, str(store.config.online_store.type))
        raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")
    rows = keys = None
    if local:
        rows, keys, _ = _card_source_stats(settings, start, end)
    t0 = time.perf_counter()
    with _feast_output_to_stderr():
        store.materialize(start_date=start, end_date=end, feature_views=[defs.CARD_VIEW])
    seconds = time.perf_counter() - t0
    result = MaterializeResult(start, end, incremental, rows, keys, seconds, str(store.config.online_store.type))
    log.info(
        "materialized %s -> %s into %s in %.2f s", start.isoformat(), end.isoformat(), result.online_store, seconds
    )
    return result


# -------------------------------------------------------------------- training set


def _entity_frame(entity: pa.Table | pd.DataFrame) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    frame = entity.to_pandas() if isinstance(entity, pa.Table) else entity.copy()
    required = [schema.TRANSACTION_ID, schema.CARD_ID, schema.EVENT_TIMESTAMP]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"the entity table lacks columns: {', '.join(missing)}")
    ts = frame[schema.EVENT_TIMESTAMP]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"{schema.EVENT_TIMESTAMP} must be a timezone-aware timestamp, got {ts.dtype}")
    if frame[schema.TRANSACTION_ID].isna().any() or frame[schema.CARD_ID].isna().any() or ts.isna().any():
        raise ValueError("the entity table has null transaction ids, card ids or timestamps")
    frame[schema.EVENT_TIMESTAMP] = ts.dt.tz_convert("UTC")
    frame[schema.CARD_ID] = frame[schema.CARD_ID].astype("int64")
    return frame


def training_set(
    settings: Settings,
    entity: pa.Table | pd.DataFrame | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    store: FeatureStore | None = None,
    allow_missing: bool = False,
) -> pa.Table:
    """A point-in-time-correct training set from ``get_historical_features``.

    ``entity`` holds ``transaction_id, card_id, event_timestamp`` (and usually the label
    ``is_fraud``); by default it is the warehouse's transactions in ``[start, end)``.
    Every feature of the versioned feature service is joined as of each row's
    ``event_timestamp``: a value stamped later is never joined. The result follows the
    "Training set" contract: identity columns, then every feature in schema order as
    float32, sorted by time then transaction id.

    A feature that cannot be joined (no value at or before the row's time) is an error
    unless ``allow_missing``, in which case it stays null.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if entity is None:
        from fraudops.data.warehouse import open_warehouse

        wh = open_warehouse(settings)
        try:
            entity = wh.read_transactions(start, end).select(list(IDENTITY_COLUMNS))
        finally:
            wh.close()
        if entity.num_rows == 0:
            raise FeatureStoreError("the warehouse holds no transactions in that window")
    frame = _entity_frame(entity)
    if frame.empty:
        raise ValueError("the entity table is empty")
    store = store or open_store(settings)
    service = store.get_feature_service(defs.feature_service_name())
    with _feast_output_to_stderr():
        joined = store.get_historical_features(entity_df=frame, features=service).to_arrow()

    columns: list[pa.Array | pa.ChunkedArray] = []
    names: list[str] = []
    for name, typ in (
        (schema.TRANSACTION_ID, pa.string()),
        (schema.CARD_ID, pa.int64()),
        (schema.EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC")),
        (schema.LABEL, pa.int8()),
    ):
        if name in joined.column_names:
            columns.append(joined.column(name).cast(typ))
            names.append(name)
    absent = [n for n in schema.FEATURE_NAMES if n not in joined.column_names]
    if absent:
        raise FeatureStoreError(f"the feature service returned no column for: {', '.join(absent[:5])}")
    for name in schema.FEATURE_NAMES:
        columns.append(joined.column(name).cast(pa.float32()))
        names.append(name)
    table = pa.Table.from_arrays(columns, names=names)
    table = table.take(
        pc.sort_indices(table, [(schema.EVENT_TIMESTAMP, "ascending"), (schema.TRANSACTION_ID, "ascending")])
    )
    if not allow_missing:
        nulls = {n: table.column(n).null_count for n in schema.FEATURE_NAMES if table.column(n).null_count}
        if nulls:
            worst = ", ".join(f"{n} ({c})" for n, c in sorted(nulls.items(), key=lambda kv: -kv[1])[:5])
            raise FeatureStoreError(
                f"{max(nulls.values()):,} of {table.num_rows:,} rows have no value for some features: {worst}. "
                "Export the sources again (`fraudops features export`) so they cover the entity rows."
            )
    return table


def write_training_set(table: pa.Table, path: Path | str) -> Path:
    """Write a training set as Parquet, atomically (a reader never sees half a file)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet_atomic(table, out)
    return out


# -------------------------------------------------------------------------- online


def online_feature_refs(store: FeatureStore, service: str | None = None) -> list[str]:
    """``view:feature`` references of the online features of the feature service, in schema order.

    A view counts as online when Feast serves it online and it carries the ``online``
    tag: the transaction-level view is in the service but offline only.
    """
    fs = store.get_feature_service(service or defs.feature_service_name())
    refs: list[str] = []
    for projection in fs.feature_view_projections:
        view = store.get_feature_view(projection.name)
        if view.online and view.tags.get(defs.ONLINE_TAG) == "true":
            refs.extend(f"{projection.name_to_use()}:{f.name}" for f in projection.features)
    return refs


def online_card_features(
    store: FeatureStore, card_ids: Iterable[int], refs: Sequence[str] | None = None
) -> dict[int, dict[str, float]]:
    """The online card features of each card id, ``{card_id: {feature: value}}``.

    Cards the online store does not know are absent from the result (the caller decides
    the fallback). ``refs`` defaults to :func:`online_feature_refs`; pass it to skip the
    registry lookup on a hot path.
    """
    ids = [int(c) for c in card_ids]
    if not ids:
        return {}
    refs = list(refs) if refs is not None else online_feature_refs(store)
    response = store.get_online_features(features=refs, entity_rows=[{schema.CARD_ID: c} for c in ids]).to_dict()
    names = [r.split(":", 1)[1] for r in refs]
    out: dict[int, dict[str, float]] = {}
    for i, card in enumerate(ids):
        values = {n: response[n][i] for n in names}
        if all(v is None for v in values.values()):
            continue
        out[card] = {n: (float("nan") if v is None else float(v)) for n, v in values.items()}
    return out


class CardFeatureReader:
    """Online card features by card id, with the store and references resolved once.

    For the predictor: ``reader = CardFeatureReader.open(settings)`` at start-up, then
    ``reader.get([card_id, ...])`` per request.
    """

    def __init__(self, store: FeatureStore, refs: Sequence[str] | None = None) -> None:
        self.store = store
        self.refs = list(refs) if refs is not None else online_feature_refs(store)
        self.feature_names = [r.split(":", 1)[1] for r in self.refs]

    @classmethod
    def open(cls, settings: Settings) -> CardFeatureReader:
        return cls(open_store(settings))

    @property
    def backend(self) -> str:
        return str(self.store.config.online_store.type)

    def get(self, card_ids: Iterable[int]) -> dict[int, dict[str, float]]:
        """See :func:`online_card_features`."""
        return online_card_features(self.store, card_ids, self.refs)


def describe(settings: Settings) -> dict[str, Any]:
    """A short summary of the configured feature store (no Feast import)."""
    return {
        "profile": settings.profile,
        "repo_dir": str(settings.feast_dir),
        "project": settings.feast_project,
        "feature_service": defs.feature_service_name(),
        "online_store": "redis" if uses_redis(settings) else "sqlite",
        "offline_store": "snowflake.offline" if settings.profile == "production" else "duckdb",
        "online_features": list(schema.CARD_FEATURE_NAMES),
    }
