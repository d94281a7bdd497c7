"""The prediction log: what the predictor actually saw and answered.

Layout (docs/CONTRACTS.md): Parquet files under ``<root>/date=YYYY-MM-DD/`` (hive
partitioning by the UTC date of ``ts``), one file per flush, named
``part-<utc time>-<uuid>.parquet``; columns ``request_id, ts, transaction_id, card_id,
model_name, model_version, variant, probability, decision, latency_ms`` and then every
feature by name (float32). ``root`` is a local path or any URL PyArrow's filesystems
understand (``s3://...`` in production).

The predictor writes the log; :func:`write_log_batch` writes the same layout for tests,
demos and benchmarks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from fraudops import schema

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

VARIANTS = ("champion", "challenger", "shadow")
TS = "ts"
VARIANT = "variant"
PROBABILITY = "probability"
DECISION = "decision"
LATENCY_MS = "latency_ms"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
REQUEST_ID = "request_id"
META_COLUMNS = (
    REQUEST_ID,
    TS,
    schema.TRANSACTION_ID,
    schema.CARD_ID,
    MODEL_NAME,
    MODEL_VERSION,
    VARIANT,
    PROBABILITY,
    DECISION,
    LATENCY_MS,
)


class PredictionLogError(ValueError):
    """A prediction log that is missing columns or cannot be read."""


def log_schema(feature_names: Sequence[str] = schema.FEATURE_NAMES) -> pa.Schema:
    """The Arrow schema of a prediction-log file."""
    import pyarrow as pa

    fields = [
        pa.field(REQUEST_ID, pa.string(), nullable=False),
        pa.field(TS, pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(schema.TRANSACTION_ID, pa.string()),
        pa.field(schema.CARD_ID, pa.int64()),
        pa.field(MODEL_NAME, pa.string(), nullable=False),
        pa.field(MODEL_VERSION, pa.string(), nullable=False),
        pa.field(VARIANT, pa.string(), nullable=False),
        pa.field(PROBABILITY, pa.float32(), nullable=False),
        pa.field(DECISION, pa.int8(), nullable=False),
        pa.field(LATENCY_MS, pa.float32(), nullable=False),
    ]
    # Features are never null in the log (a row is logged only once scored), and a required
    # Parquet column skips the definition levels: a third cheaper to write.
    fields += [pa.field(name, pa.float32(), nullable=False) for name in feature_names]
    return pa.schema(fields)


def _filesystem(root: str | Path) -> tuple[pafs.FileSystem, str]:
    import pyarrow.fs as pafs

    text = str(root)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).resolve())


def partition_name(day: date) -> str:
    """``date=YYYY-MM-DD``, the hive partition of one UTC day."""
    return f"date={day.isoformat()}"


def days_between(start: datetime, end: datetime) -> list[date]:
    """The UTC dates touched by ``[start, end)``."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("interval bounds must be timezone-aware (UTC)")
    if end <= start:
        raise ValueError(f"empty interval: end {end.isoformat()} is not after start {start.isoformat()}")
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def list_log_files(root: str | Path, start: datetime, end: datetime) -> list[str]:
    """The Parquet files of the partitions that cover ``[start, end)`` (sorted)."""
    import pyarrow.fs as pafs

    fs, base = _filesystem(root)
    files: list[str] = []
    for day in days_between(start, end):
        selector = pafs.FileSelector(f"{base}/{partition_name(day)}", allow_not_found=True)
        for info in fs.get_file_info(selector):
            name = info.base_name
            if info.type == pafs.FileType.File and name.endswith(".parquet") and not name.startswith("."):
                files.append(info.path)
    return sorted(files)


def read_prediction_log(
    root: str | Path,
    start: datetime,
    end: datetime,
    *,
    variants: Sequence[str] | None = ("champion",),
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Rows logged in ``[start, end)``, of the given variants (None: all), as one table.

    ``columns`` limits what is read (the meta columns needed for filtering are read
    anyway). A day without traffic gives an empty table with the asked columns; a file
    that lacks an asked column raises :class:`PredictionLogError` naming it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if variants is not None:
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise PredictionLogError(f"unknown variant(s) {unknown}; the log knows {list(VARIANTS)}")
    files = list_log_files(root, start, end)
    wanted = list(columns) if columns is not None else None
    if not files:
        full = log_schema()
        names = wanted if wanted is not None else full.names
        fields = [full.field(n) if n in full.names else pa.field(n, pa.float32()) for n in names]
        return pa.schema(fields).empty_table()
    fs, _ = _filesystem(root)
    dataset = ds.dataset(files, format="parquet", filesystem=fs)
    available = set(dataset.schema.names)
    needed = set(wanted or []) | {TS} | ({VARIANT} if variants is not None else set())
    missing = sorted(needed - available)
    if missing:
        raise PredictionLogError(
            f"prediction log under {root} lacks column(s) {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    start_s = pa.scalar(start.astimezone(UTC), type=pa.timestamp("us", tz="UTC"))
    end_s = pa.scalar(end.astimezone(UTC), type=pa.timestamp("us", tz="UTC"))
    helpers = [TS] + ([VARIANT] if variants is not None else [])
    to_read = None if wanted is None else list(dict.fromkeys([*wanted, *helpers]))
    try:
        # Read, then filter only if some row is outside: a day partition of champion
        # traffic usually matches entirely, and filtering copies every column.
        table = dataset.to_table(columns=to_read)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PredictionLogError(f"cannot read the prediction log under {root}: {exc}") from exc
    ts = table.column(TS)
    mask = pc.and_(pc.greater_equal(ts, start_s), pc.less(ts, end_s))
    if variants is not None:
        mask = pc.and_(mask, pc.is_in(table.column(VARIANT), value_set=pa.array(list(variants), pa.string())))
    if not pc.all(mask).as_py():
        table = table.filter(mask)
    return table if wanted is None else table.select(wanted)


def write_log_batch(records: pa.Table, root: str | Path, *, flushed_at: datetime | None = None) -> list[str]:
    """Write log records as one flush: one file per UTC date of ``ts``; returns the paths.

    Records are cast to :func:`log_schema` for their feature columns (a clear error when
    a column is missing or has the wrong type).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    feature_names = [n for n in records.column_names if n not in META_COLUMNS]
    target = log_schema(feature_names)
    missing = [n for n in META_COLUMNS if n not in records.column_names]
    if missing:
        raise PredictionLogError(f"log records lack column(s): {', '.join(missing)}")
    try:
        records = records.select(target.names).cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise PredictionLogError(f"log records do not fit the log schema: {exc}") from exc
    if records.num_rows == 0:
        return []
    fs, base = _filesystem(root)
    stamp = (flushed_at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    day_of = pc.strftime(records.column(TS), format="%Y-%m-%d")
    written: list[str] = []
    for day_text in pc.unique(day_of).to_pylist():
        part = records.filter(pc.equal(day_of, day_text))
        directory = f"{base}/{partition_name(date.fromisoformat(day_text))}"
        fs.create_dir(directory, recursive=True)
        path = f"{directory}/part-{stamp}-{uuid.uuid4().hex}.parquet"
        pq.write_table(part, path, filesystem=fs)
        written.append(path)
    log.debug("wrote %d log rows in %d file(s)", records.num_rows, len(written))
    return written
