"""Training sets: read, check and split.

A training set is a Parquet file (or a directory of Parquet files) with the identity
columns, the label and every feature of :mod:`fraudops.schema` (docs/CONTRACTS.md).
The Feast historical retrieval, a DVC snapshot and the generator's Parquet output all
have this shape. Anything else is refused with an error that says what is wrong,
before any training starts.

Splits are time-ordered (train, then validation, then test, by ``event_timestamp``):
fraud patterns drift, so a random split would let the model peek at the future and
overstate the metrics it will reach in production.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fraudops import schema

log = logging.getLogger(__name__)

_US_PER_S = 1_000_000


class TrainingDataError(ValueError):
    """The training set cannot be used (missing columns, bad values, too few rows...)."""


@dataclass(frozen=True, slots=True)
class Split:
    """Rows of one split, in time order. ``X`` is float32 in schema order."""

    name: str
    X: np.ndarray
    y: np.ndarray  # float32, 0.0 / 1.0
    event_time_us: np.ndarray  # int64 microseconds since the epoch, UTC

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_positive(self) -> int:
        return int(self.y.sum())

    @property
    def positive_rate(self) -> float:
        return self.n_positive / self.n_rows if self.n_rows else 0.0

    def time_range(self) -> tuple[datetime, datetime]:
        """First and last event time of the split (UTC)."""
        lo, hi = int(self.event_time_us[0]), int(self.event_time_us[-1])
        return (
            datetime.fromtimestamp(lo / _US_PER_S, tz=UTC),
            datetime.fromtimestamp(hi / _US_PER_S, tz=UTC),
        )

    def describe(self) -> dict[str, Any]:
        """Size, class balance and time range, for the run's parameters."""
        start, end = self.time_range()
        return {
            f"{self.name}_rows": self.n_rows,
            f"{self.name}_positives": self.n_positive,
            f"{self.name}_positive_rate": round(self.positive_rate, 6),
            f"{self.name}_start": start.isoformat(),
            f"{self.name}_end": end.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Splits:
    train: Split
    val: Split
    test: Split

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split in (self.train, self.val, self.test):
            out.update(split.describe())
        return out


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """A whole training set in memory, sorted by event time."""

    X: np.ndarray
    y: np.ndarray
    event_time_us: np.ndarray
    source: str

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


def _required_columns() -> list[str]:
    return [schema.EVENT_TIMESTAMP, schema.LABEL, *schema.FEATURE_NAMES]


def load_training_set(path: str | Path, *, min_rows: int = 1_000) -> TrainingSet:
    """Read a training-set Parquet file (or directory) into memory and check it.

    Raises :class:`TrainingDataError` when the path is missing or not Parquet, a column
    of the contract is missing or not numeric, a value is null, NaN or infinite, a
    label is not 0/1, or there are fewer than ``min_rows`` rows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = str(path)
    if "://" not in source and not Path(source).exists():
        raise TrainingDataError(f"training set not found: {source}")
    try:
        available = set(pq.read_schema(source).names) if Path(source).is_file() else None
    except (pa.ArrowInvalid, OSError) as exc:
        raise TrainingDataError(f"{source} is not a readable Parquet file: {exc}") from exc
    required = _required_columns()
    if available is not None:
        missing = [c for c in required if c not in available]
        if missing:
            shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
            raise TrainingDataError(
                f"{source} lacks {len(missing)} column(s) of the training-set contract "
                f"(feature schema {schema.FEATURE_SCHEMA_VERSION}): {shown}"
            )
    try:
        table = pq.read_table(source, columns=required)
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise TrainingDataError(f"cannot read the training set {source}: {exc}") from exc

    n = table.num_rows
    if n < min_rows:
        raise TrainingDataError(f"{source} has {n:,} rows; training needs at least {min_rows:,}")

    ts_col = table.column(schema.EVENT_TIMESTAMP)
    if not pa.types.is_timestamp(ts_col.type):
        raise TrainingDataError(f"{schema.EVENT_TIMESTAMP} must be a timestamp, got {ts_col.type}")
    if ts_col.null_count:
        raise TrainingDataError(f"{schema.EVENT_TIMESTAMP} has {ts_col.null_count:,} null value(s)")
    # Naive timestamps are taken as UTC (the contract says UTC).
    ts_us = pc.cast(ts_col, pa.timestamp("us", tz=ts_col.type.tz)).cast(pa.int64()).to_numpy()

    label_col = table.column(schema.LABEL)
    if label_col.null_count:
        raise TrainingDataError(f"{schema.LABEL} has {label_col.null_count:,} null value(s)")
    if not (pa.types.is_integer(label_col.type) or pa.types.is_floating(label_col.type)):
        raise TrainingDataError(f"{schema.LABEL} must be 0/1, got type {label_col.type}")
    y = label_col.to_numpy().astype(np.float64)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise TrainingDataError(
            f"{schema.LABEL} must be 0 or 1; {int(bad.sum()):,} row(s) are not (e.g. {y[bad][:3].tolist()})"
        )

    X = np.empty((n, schema.N_FEATURES), dtype=np.float32)
    problems: list[str] = []
    for j, name in enumerate(schema.FEATURE_NAMES):
        col = table.column(name)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            problems.append(f"{name}: type {col.type} is not numeric")
            continue
        if col.null_count:
            problems.append(f"{name}: {col.null_count:,} null")
            continue
        values = col.to_numpy().astype(np.float32, copy=False)
        nonfinite = int((~np.isfinite(values)).sum())
        if nonfinite:
            problems.append(f"{name}: {nonfinite:,} NaN/infinite")
            continue
        X[:, j] = values
    if problems:
        shown = "; ".join(problems[:8]) + (f"; (+{len(problems) - 8} more columns)" if len(problems) > 8 else "")
        raise TrainingDataError(f"{source} has unusable feature values: {shown}")

    # Stable sort on time: the generator and Feast already write in time order, but a
    # directory of files or a warehouse export need not.
    order = np.argsort(ts_us, kind="stable")
    if not np.array_equal(order, np.arange(n)):
        X, y, ts_us = X[order], y[order], ts_us[order]
    log.info("loaded %s rows, %s fraud (%.3f%%) from %s", f"{n:,}", f"{int(y.sum()):,}", 100 * y.mean(), source)
    return TrainingSet(X=X, y=y.astype(np.float32), event_time_us=ts_us.astype(np.int64), source=source)


def split_by_time(data: TrainingSet, *, val_fraction: float = 0.15, test_fraction: float = 0.15) -> Splits:
    """Split rows in time order: the oldest for training, then validation, then test.

    Every split must hold both classes, or the metrics (AUC) cannot be computed; a
    training set too small or too clean for that is refused with the counts.
    """
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0 and val_fraction + test_fraction < 0.9):
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1) and leave at least 10 % for training "
            f"(got {val_fraction}, {test_fraction})"
        )
    n = data.n_rows
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    parts: dict[str, Split] = {}
    for name, (lo, hi) in bounds.items():
        part = Split(name, data.X[lo:hi], data.y[lo:hi], data.event_time_us[lo:hi])
        if part.n_rows == 0 or part.n_positive in (0, part.n_rows):
            raise TrainingDataError(
                f"the {name} split ({part.n_rows:,} rows, {part.n_positive:,} positive) needs both classes; "
                f"use a larger training set (it has {n:,} rows, {int(data.y.sum()):,} positive)"
            )
        parts[name] = part
    return Splits(train=parts["train"], val=parts["val"], test=parts["test"])


def data_fingerprint(path: str | Path) -> str:
    """MD5 of a training-set file: the same value DVC records for a single-file snapshot.

    For a directory, the MD5 of the sorted relative names and file MD5s (pass the DVC
    hash explicitly with ``--data-version`` when it is known).
    """
    p = Path(path)

    def _md5(file: Path) -> str:
        h = hashlib.md5(usedforsecurity=False)
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    if p.is_file():
        return _md5(p)
    if p.is_dir():
        h = hashlib.md5(usedforsecurity=False)
        for file in sorted(f for f in p.rglob("*") if f.is_file()):
            h.update(f"{file.relative_to(p)}:{_md5(file)}\n".encode())
        return h.hexdigest()
    raise TrainingDataError(f"cannot fingerprint {path}: not a local file or directory (pass --data-version)")
