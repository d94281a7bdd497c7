"""The prediction log: every scored row, written without blocking the response.

Layout (docs/CONTRACTS.md, "Prediction log"): Parquet files under
``<root>/date=YYYY-MM-DD/`` (UTC date of ``ts``), one file per flush and date, named
``part-<utc time>-<uuid>.parquet``; columns ``request_id, ts, transaction_id, card_id,
model_name, model_version, variant, probability, decision, latency_ms`` and every
feature by name (float32). ``root`` is a local directory or any URL PyArrow's
filesystems understand (``s3://bucket/prefix`` in production).

How it stays off the hot path: a request copies its rows into preallocated column
buffers (segments, one open per model and variant; features column-major), which costs
about a microsecond per row on the event loop and keeps nothing the request allocated.
A background thread takes the filled segments and writes them every ``flush_interval_s``
or when ``flush_rows`` rows are pending; written segments are filled again. On Linux that
thread runs at ``SCHED_IDLE`` (only on a core nothing else wants, so a flush never delays a
request), and a second one, at ``thread_nice``, flushes in its place when it falls behind (every
core busy): see :meth:`PredictionLog.start`. A failed
write is retried with the same rows; only when more than ``max_pending_rows`` are waiting
(the sink has been down for long) are the oldest rows dropped, counted in
``fraudops_prediction_log_dropped_rows_total`` and logged. :meth:`PredictionLog.close`
(graceful shutdown) writes everything pending.
On a local filesystem the files of a flush (at most ``max_file_rows`` rows each) are
written under hidden names and renamed when all are complete, so a reader never sees a
half-written file and a failed flush leaves none behind to be duplicated by its retry;
they are written around the page cache (see :class:`LocalParquetSink`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import mmap
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops_serving.metrics import Metrics

log = logging.getLogger(__name__)

_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

META_COLUMNS = (
    "request_id",
    "ts",
    "transaction_id",
    "card_id",
    "model_name",
    "model_version",
    "variant",
    "probability",
    "decision",
    "latency_ms",
)


# Dictionary-encode only the low-cardinality strings: trying it on 128 float columns triples
# the write time (measured: 257 -> 79 ms per 20,000 rows) and makes the files larger.
# Snappy only where it pays: on the callers' ids and the labels. The float features hardly
# compress (4 % smaller) and compressing them costs 40 % of the write; the request ids are
# random hex, which Snappy (no entropy coding) cannot shrink: compressing them cost a fifth of
# the whole encode (7,000 rows of 128 features: 3.48 -> 2.74 ms) for 0.8 % of the file.
_PARQUET_OPTIONS: dict[str, Any] = {
    "use_dictionary": ["model_name", "model_version", "variant"],
    "write_statistics": ["ts", "variant", "model_version"],
}
_UNCOMPRESSED = ("request_id",)


def parquet_options(feature_names: Sequence[str]) -> dict[str, Any]:
    """``pyarrow.parquet.write_table`` options of a prediction-log file."""
    compression = (
        dict.fromkeys(META_COLUMNS, "snappy")
        | dict.fromkeys(_UNCOMPRESSED, "none")
        | dict.fromkeys(feature_names, "none")
    )
    return {**_PARQUET_OPTIONS, "compression": compression}


@dataclass(slots=True)
class Chunk:
    """Rows of one request and one variant, as :meth:`PredictionLog.append` takes them.

    The id columns are Python lists (single rows: cheapest to make) or Arrow arrays
    (batches: made by the request parser without a Python object per row). Building the
    log's table from them happens in the flushing thread, never on the request path.
    """

    request_ids: Sequence[str] | pa.Array
    ts_us: int | np.ndarray  # one time for the chunk, or one per row
    transaction_ids: Sequence[str | None] | pa.Array
    card_ids: Sequence[int | None] | pa.Array
    model_name: str
    model_version: str
    variant: str
    probability: Any  # float32 array or list
    decision: Any  # int8 array or list
    latency_ms: float | np.ndarray  # one for the chunk, or one per row
    features: np.ndarray  # [rows, n_features] float32


def log_schema(feature_names: Sequence[str]) -> pa.Schema:
    """The Arrow schema of a prediction-log file."""
    return _log_schema(tuple(feature_names))


@functools.lru_cache(maxsize=8)
def _log_schema(feature_names: tuple[str, ...]) -> pa.Schema:
    """:func:`log_schema`, built once per feature list (every flush needs it; 138 fields)."""
    import pyarrow as pa

    fields = [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("transaction_id", pa.string()),
        pa.field("card_id", pa.int64()),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("probability", pa.float32(), nullable=False),
        pa.field("decision", pa.int8(), nullable=False),
        pa.field("latency_ms", pa.float32(), nullable=False),
    ]
    # Features are never null in the log (a row is logged only once scored), and a required
    # Parquet column skips the definition levels: a third cheaper to write.
    fields += [pa.field(name, pa.float32(), nullable=False) for name in feature_names]
    return pa.schema(fields)


def _column(parts: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """One column from per-chunk lists and arrays, in order (runs of lists become one array)."""
    import pyarrow as pa

    segments: list[pa.Array] = []
    pending: list[Any] = []
    for part in parts:
        if isinstance(part, pa.Array | pa.ChunkedArray):
            if pending:
                segments.append(pa.array(pending, type_))
                pending = []
            chunks = part.chunks if isinstance(part, pa.ChunkedArray) else [part]
            segments += [c if c.type == type_ else c.cast(type_) for c in chunks]
        else:
            pending.extend(part)
    if pending or not segments:
        segments.append(pa.array(pending, type_))
    return segments[0] if len(segments) == 1 else pa.concat_arrays(segments)


def _repeated(values: Sequence[str], counts: np.ndarray) -> pa.Array:
    """A string column holding ``values[i]`` ``counts[i]`` times, without a Python object per row."""
    import pyarrow as pa

    uniques = list(dict.fromkeys(values))
    if len(uniques) == 1:
        codes = np.zeros(int(counts.sum()), dtype=np.int32)
    else:
        index = {v: i for i, v in enumerate(uniques)}
        codes = np.repeat(np.fromiter((index[v] for v in values), np.int32, len(values)), counts)
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(uniques, pa.string())).dictionary_decode()


class _Segment:
    """Rows of one model and variant in preallocated columns.

    Every request's rows are copied in when it is answered, so that nothing the request
    allocated (its body above all) outlives it: the memory is reused by the next request
    instead of faulting in fresh pages. A written segment goes back to a pool and is
    filled again, so that the log's own buffers are not fresh memory either.

    Features are row-major in a segment of single rows (a row is 512 contiguous bytes, not
    one value in each of 128 columns) and column-major in a segment of batches (copied from
    an Arrow body's columns as they lie, and handed to Parquet column by column without a
    copy) and of micro-batches (transposed by the flushing thread as it drains them).
    """

    __slots__ = ("decision", "features", "key", "latency", "n", "parts", "probability", "start", "ts")

    def __init__(self, capacity: int, width: int, order: Literal["C", "F"]) -> None:
        self.features = np.empty((capacity, width), dtype=np.float32, order=order)
        self.probability = np.empty(capacity, dtype=np.float32)
        self.decision = np.empty(capacity, dtype=np.int8)
        self.ts = np.empty(capacity, dtype=np.int64)
        self.latency = np.empty(capacity, dtype=np.float32)
        self.key: tuple[str, str, str, str] = ("", "", "", order)
        self.start = 0  # rows before it were dropped (see PredictionLog._requeue)
        self.n = 0
        # Id columns (request, transaction, card) as parts in row order: lists (single rows,
        # one list per run of them) or Arrow arrays (batches), made into one column each at
        # a flush.
        self.parts: tuple[list[Any], list[Any], list[Any]] = ([], [], [])

    @property
    def capacity(self) -> int:
        return int(self.features.shape[0])

    @property
    def rows(self) -> int:
        return self.n - self.start

    def reset(self, key: tuple[str, str, str, str]) -> _Segment:
        self.key, self.start, self.n, self.parts = key, 0, 0, ([], [], [])
        return self

    def put(
        self,
        lo: int,
        k: int,
        ids: tuple[Any, Any, Any],
        ts_us: int | np.ndarray,
        probability: Any,
        decision: Any,
        latency_ms: Any,
        features: np.ndarray,
    ) -> None:
        """Copy rows ``lo .. lo + k`` of one request (or micro-batch) in after the rows held.

        Per-row values are arrays or lists; ``ts_us`` and ``latency_ms`` may be one number
        for all rows.
        """
        i, j, hi = self.n, self.n + k, lo + k
        whole = lo == 0 and k == features.shape[0]
        if k == 1:  # one row (most micro-batches below peak load): item stores, no slices
            self.features[i] = features[lo]
            self.probability[i] = probability[lo]
            self.decision[i] = decision[lo]
            self.ts[i] = ts_us[lo] if isinstance(ts_us, np.ndarray) else ts_us
            self.latency[i] = latency_ms[lo] if isinstance(latency_ms, np.ndarray | list) else latency_ms
        else:
            rows = features if whole else features[lo:hi]
            if self.key[3] == "F" and rows.flags.c_contiguous:  # drained micro-batches
                _transpose_into(self.features[i:j], rows)
            else:
                self.features[i:j] = rows
            self.probability[i:j] = probability if whole else probability[lo:hi]
            self.decision[i:j] = decision if whole else decision[lo:hi]
            self.ts[i:j] = ts_us[lo:hi] if isinstance(ts_us, np.ndarray) else ts_us
            self.latency[i:j] = latency_ms[lo:hi] if isinstance(latency_ms, np.ndarray | list) else latency_ms
        for parts, column in zip(self.parts, ids, strict=True):
            if type(column) is list:  # runs of single rows share one list
                run = column if whole else column[lo:hi]
                if parts and type(parts[-1]) is list:
                    parts[-1] += run
                else:
                    parts.append(list(run))
            else:
                parts.append(_own(column, lo, k, whole))
        self.n = j

    def drop_oldest(self, k: int) -> None:
        """Forget the ``k`` oldest rows held (``k < rows``)."""
        import pyarrow as pa

        types = (pa.string(), pa.string(), pa.int64())
        self.parts = tuple(  # type: ignore[assignment]
            [_column(parts, t).slice(k)] for parts, t in zip(self.parts, types, strict=True)
        )
        self.start += k

    def columns(self) -> dict[str, Any]:
        """NumPy views of the held rows of the numeric columns (the ids are in ``parts``)."""
        a, b = self.start, self.n
        return {
            "features": self.features[a:b],
            "probability": self.probability[a:b],
            "decision": self.decision[a:b],
            "ts": self.ts[a:b],
            "latency": self.latency[a:b],
        }


def _own(column: pa.Array, lo: int, k: int, whole: bool) -> pa.Array:
    """Rows ``lo .. lo + k`` of an Arrow id column, copied: one read from a request body would
    keep the whole body alive."""
    import pyarrow as pa

    return pa.concat_arrays([column if whole else column.slice(lo, k)])


def _table(segments: list[_Segment], feature_names: Sequence[str]) -> pa.Table:
    """The log table of the held rows of ``segments``: feature columns are zero-copy chunks
    of column-major blocks (row-major segments are transposed into one first)."""
    import pyarrow as pa

    schema = log_schema(feature_names)
    # Column-major segments first, then the row-major ones, which become one column-major block.
    segments = sorted(segments, key=lambda s: s.key[3] == "C")
    views = [s.columns() for s in segments]
    counts = np.fromiter((s.rows for s in segments), np.int64, len(segments))

    def numeric(name: str, type_: pa.DataType) -> pa.Array:
        return pa.array(np.concatenate([v[name] for v in views]), type_)

    def ids(i: int, type_: pa.DataType) -> pa.Array:
        return _column(list(chain.from_iterable(s.parts[i] for s in segments)), type_)

    # Each column-major block as one flat Arrow array over all its columns (zero-copy), of
    # which every feature column is a slice: one conversion a block, not one a column.
    blocks: list[tuple[pa.Array, int, int, int]] = []  # (flat values, rows of a column, first row, rows)
    for seg in segments:
        if seg.key[3] == "F":
            blocks.append((pa.array(seg.features.ravel(order="F")), seg.capacity, seg.start, seg.rows))
    rowwise = [v["features"] for s, v in zip(segments, views, strict=True) if s.key[3] == "C"]
    if rowwise:
        block = _column_major(rowwise)
        blocks.append((pa.array(block.ravel(order="F")), block.shape[0], 0, block.shape[0]))
    f32 = pa.float32()
    columns: list[Any] = [
        ids(0, pa.string()),
        numeric("ts", pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        ids(1, pa.string()),
        ids(2, pa.int64()),
        _repeated([s.key[0] for s in segments], counts),
        _repeated([s.key[1] for s in segments], counts),
        _repeated([s.key[2] for s in segments], counts),
        numeric("probability", f32),
        numeric("decision", pa.int8()),
        numeric("latency", f32),
    ]
    columns += [
        pa.chunked_array([flat.slice(j * height + first, rows) for flat, height, first, rows in blocks], f32)
        for j in range(len(feature_names))
    ]
    return pa.Table.from_arrays(columns, schema=schema)


_BLOCK_ROWS = 64


def _transpose_into(out: np.ndarray, rows: np.ndarray) -> None:
    """Row-major ``rows`` into the column-major ``out`` of their shape, 64 rows at a time (a
    plain assignment is a transposition that misses the cache on every value: ten times slower)."""
    for s in range(0, rows.shape[0], _BLOCK_ROWS):
        out[s : s + _BLOCK_ROWS] = rows[s : s + _BLOCK_ROWS]


def _column_major(parts: list[np.ndarray]) -> np.ndarray:
    """Row-major blocks stacked into one column-major block (see :func:`_transpose_into`)."""
    out = np.empty((sum(p.shape[0] for p in parts), parts[0].shape[1]), dtype=np.float32, order="F")
    pos = 0
    for part in parts:
        _transpose_into(out[pos : pos + part.shape[0]], part)
        pos += part.shape[0]
    return out


def _per_row(entries: list[tuple[Any, ...]], counts: list[int], c: int) -> list[Any]:
    """Per-row column ``c`` (0: request ids, 1: transaction ids, 2: card ids, 3: start times)
    of micro-batch entries of :meth:`PredictionLog.append_scored`, in order."""
    return list(chain.from_iterable(e[8 + c * k : 8 + (c + 1) * k] for e, k in zip(entries, counts, strict=True)))


class LocalParquetSink:
    """Writes Parquet files to a local disk without the page cache (``O_DIRECT``).

    A log file is megabytes of new data that nothing reads back soon. Written through the
    page cache, every byte is copied into freshly allocated, zeroed pages that the kernel
    then writes back on its own threads, and a few hundred megabytes of dirty pages make
    it throttle the writer (measured here: 2.4-3.5 GB/s of one core's time, falling to
    0.33 GB/s once throttled; the same data written direct costs a fifth to a tenth of
    that CPU). So a file is encoded into one retained, page-aligned buffer (memory this
    process already has, not fresh pages every flush) and written from it directly: whole
    blocks, the last one padded and the file then truncated to its length.

    Where the filesystem refuses direct I/O (tmpfs on older kernels, some network
    filesystems), files are written through the page cache instead, and that is logged
    once.
    """

    BLOCK = 4096  # the alignment O_DIRECT asks for on every common disk

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._buffer: mmap.mmap | None = None
        self.direct = hasattr(os, "O_DIRECT")

    @property
    def buffer_bytes(self) -> int:
        return 0 if self._buffer is None else len(self._buffer)

    def write(self, table: pa.Table, path: str) -> int:
        """Write ``table`` to the file ``path``; returns its size in bytes."""
        size = self._encode(table)
        assert self._buffer is not None
        data = memoryview(self._buffer)
        try:
            if self.direct:
                try:
                    self._write_direct(path, data, size)
                    return size
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    self.direct = False
                    log.info("prediction log: %s refuses direct I/O (%s); writing through the page cache", path, exc)
            with open(path, "wb") as f:
                f.write(data[:size])
            return size
        finally:
            data.release()

    def _encode(self, table: pa.Table) -> int:
        """Encode ``table`` as Parquet into the retained buffer (grown when too small)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Plain-encoded values take about their Arrow size (strings: 64 bytes counted a value);
        # headers, footer and metadata fit in the margin. Too small: the buffer doubles.
        width = sum(f.type.bit_width // 8 if pa.types.is_primitive(f.type) else 64 for f in table.schema)
        need = max(self.buffer_bytes, table.num_rows * width + (1 << 20) + 512 * table.num_columns)
        while True:
            if self._buffer is None or len(self._buffer) < need:
                if self._buffer is not None:
                    self._buffer.close()
                self._buffer = mmap.mmap(-1, -(-need // (1 << 20)) * (1 << 20))
            target = pa.py_buffer(self._buffer)
            sink = pa.FixedSizeBufferWriter(target)
            try:
                pq.write_table(table, sink, **self._options)
                return int(sink.tell())
            except OSError as exc:
                if "out of bounds" not in str(exc):
                    raise
                need = 2 * len(self._buffer)
            finally:
                del sink, target  # no view of the buffer may outlive this (it may be closed above)

    def _write_direct(self, path: str, data: memoryview, size: int) -> None:
        padded = -(-size // self.BLOCK) * self.BLOCK  # the buffer is whole megabytes: padding lies inside it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        try:
            done = 0
            while done < padded:
                done += os.write(fd, data[done:padded])
            if padded != size:
                os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)


class PredictionLog:
    """Buffered, non-blocking writer of the prediction log."""

    # Rows of a segment (at most; fewer when flush_rows is smaller): 4 MiB of features at 128.
    SEGMENT_ROWS = 8192
    # The micro-batches of /predict go into segments every DRAIN_S between flushes, in slices
    # of DRAIN_ENTRIES (see _drain).
    DRAIN_S = 0.05
    DRAIN_ENTRIES = 64
    # The catch-up thread flushes when this many flushes' worth of rows are pending, or when no
    # flush has ended for this many flush intervals (see start()).
    CATCH_UP_FLUSHES = 2

    def __init__(
        self,
        root: str,
        feature_names: Sequence[str],
        *,
        metrics: Metrics | None = None,
        flush_interval_s: float = 5.0,
        flush_rows: int = 100_000,
        max_pending_rows: int = 2_000_000,
        thread_nice: int = 5,
        thread_idle: bool = True,
        max_file_rows: int = 131_072,
    ) -> None:
        self.root = root
        self.feature_names = tuple(feature_names)
        self.metrics = metrics
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.max_pending_rows = max_pending_rows
        self.max_file_rows = max(1, max_file_rows)  # 64 MiB of features at 128 a row
        self.thread_nice = thread_nice
        self.thread_idle = thread_idle and hasattr(os, "SCHED_IDLE")
        self._capacity = max(1, min(flush_rows, self.SEGMENT_ROWS))
        self._sealed: list[_Segment] = []  # full, in the order they were filled
        # Being filled: one per model, variant and layout.
        self._open: dict[tuple[str, str, str, str], _Segment] = {}
        self._free: dict[str, list[_Segment]] = {"C": [], "F": []}  # written, ready to be filled again
        self._max_free = 2 + 2 * -(-flush_rows // self._capacity)
        self._pending = 0
        # Micro-batches of /predict as they were scored (see append_scored): copied into
        # segments by the flushing thread, many at a time.
        self._inbox: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._behind = threading.Event()  # wakes the catch-up thread (see start())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._catch_up_thread: threading.Thread | None = None
        self._flushed_at = time.monotonic()  # the end of the last flush, by any thread
        self._failing = False  # the last flush failed (its thread retries with a backoff)
        # Overlapping drains and flushes, by ticket (the order they began): micro-batches not
        # yet in segments, rows taken and not yet written.
        self._ticket = 0
        self._draining: dict[int, int] = {}
        self._flights: dict[int, int] = {}
        self._settled = threading.Condition(self._lock)  # a drain or a flight ended
        self.catch_up_flushes = 0
        self.rows_written = 0
        self.rows_dropped = 0
        self.files: list[str] = []
        self._parquet_options = parquet_options(self.feature_names)
        # One sink (and its retained buffer) a flushing thread: flushes may overlap.
        self._sinks: dict[int, LocalParquetSink] = {}

    # ------------------------------------------------------------------ hot path
    def append(self, chunk: Chunk) -> None:
        """Log the rows of one request (copied into the open segment; never touches the sink)."""
        self.append_rows(
            chunk.request_ids,
            chunk.ts_us,
            chunk.transaction_ids,
            chunk.card_ids,
            chunk.model_name,
            chunk.model_version,
            chunk.variant,
            chunk.probability,
            chunk.decision,
            chunk.latency_ms,
            chunk.features,
        )

    def append_row(
        self,
        request_id: str,
        ts_us: int,
        transaction_id: str | None,
        card_id: int | None,
        model_name: str,
        model_version: str,
        variant: str,
        probability: float,
        decision: int,
        latency_ms: float,
        row: np.ndarray,
    ) -> None:
        """Log one scored row (``/predict`` without micro-batching): a micro-batch of one."""
        self.append_rows(
            [request_id],
            ts_us,
            [transaction_id],
            [card_id],
            model_name,
            model_version,
            variant,
            np.array([probability], dtype=np.float32),
            np.array([decision], dtype=np.int8),
            latency_ms,
            row.reshape(1, -1),
        )

    def append_rows(
        self,
        request_ids: Sequence[str] | pa.Array,
        ts_us: int | np.ndarray,
        transaction_ids: Sequence[str | None] | pa.Array,
        card_ids: Sequence[int | None] | pa.Array,
        model_name: str,
        model_version: str,
        variant: str,
        probability: Any,
        decision: Any,
        latency_ms: float | np.ndarray | list[float],
        rows: np.ndarray,
    ) -> None:
        """Log scored rows of one model and variant (a request, a batch or a micro-batch of
        ``/predict``): copied into the open segment of that model and variant, across as
        many segments as they fill. ``rows`` may be row- or column-major."""
        n = self._check_rows(rows)
        with self._lock:
            self._put(
                (model_name, model_version, variant),
                (request_ids, transaction_ids, card_ids),
                ts_us,
                probability,
                decision,
                latency_ms,
                rows,
            )
            self._pending += n
            pending = self._pending
        if pending >= self.flush_rows:
            self._flush_due(pending)

    def append_scored(
        self,
        request_ids: Sequence[str],
        ts_us: int,
        transaction_ids: Sequence[str | None],
        card_ids: Sequence[int | None],
        model_name: str,
        model_version: str,
        variant: str,
        probability: np.ndarray,
        threshold: float,
        started: Sequence[float],
        answered: float,
        rows: np.ndarray,
    ) -> None:
        """Log a micro-batch of ``/predict`` (rows of one model call), taking its objects as
        they are: the caller hands them over and does not change them afterwards.

        Nothing is copied or computed here: the flushing thread copies the micro-batches that
        arrived since its last flush into segments together, one NumPy call a column for
        hundreds of them, and derives the decisions (``probability >= threshold``, as the
        responses said) and latencies (``answered - started``, ``time.perf_counter`` seconds)
        there. ``rows`` is the model's input (row-major, made by the caller for the call,
        never a view of a request body), ``probability`` the model's output. The per-row
        values (strings and numbers) are kept in one flat tuple with the rest: one object
        for the garbage collector, which stops tracking it at its first pass (a list or a
        tuple a column would be one to four more, each traversed until then).
        """
        n = self._check_rows(rows)
        entry = (model_name, model_version, variant, ts_us, probability, threshold, answered, rows)
        flat = (*entry, *request_ids, *transaction_ids, *card_ids, *started)
        with self._lock:
            self._inbox.append(flat)
            self._pending += n
            pending = self._pending
        if pending >= self.flush_rows:
            self._flush_due(pending)

    def _flush_due(self, pending: int) -> None:
        """Wake the flushing thread (``flush_rows`` pending), and the catch-up thread too when
        it has fallen behind (see :meth:`start`)."""
        self._wake.set()
        if pending >= self.CATCH_UP_FLUSHES * self.flush_rows:
            self._behind.set()

    def _check_rows(self, rows: np.ndarray) -> int:
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ValueError(f"log rows have {rows.shape[-1]} features, the log {len(self.feature_names)}")
        return int(rows.shape[0])

    def _put(
        self,
        model: tuple[str, str, str],
        ids: tuple[Any, Any, Any],
        ts_us: int | np.ndarray,
        probability: Any,
        decision: Any,
        latency_ms: Any,
        rows: np.ndarray,
        layout: Literal["C", "F"] | None = None,
    ) -> None:
        """Copy rows of one model and variant into its open segment, across as many segments
        as they fill (call with the lock held; the caller counts them as pending). ``layout``:
        the segments' (default: the rows' own, so that the copy runs along memory)."""
        n = rows.shape[0]
        key = (*model, layout or ("C" if n == 1 or rows.flags.c_contiguous else "F"))
        done = 0
        while done < n:
            seg = self._open.get(key)
            if seg is None:
                seg = self._open[key] = self._segment(key)
            k = min(n - done, seg.capacity - seg.n)
            seg.put(done, k, ids, ts_us, probability, decision, latency_ms, rows)
            if seg.n == seg.capacity:
                self._sealed.append(seg)
                del self._open[key]
            done += k

    def _drain(self) -> None:
        """Copy the micro-batches of :meth:`append_scored` into segments, those of one model and
        variant together, ``DRAIN_ENTRIES`` at a time (they were counted as pending when they
        arrived). Between two slices the interpreter is let go (``time.sleep(0)``): a request
        waiting for it waits for one slice (a fraction of a millisecond), not for them all."""
        with self._lock:
            inbox, self._inbox = self._inbox, []
            if not inbox:
                return
            ticket = self._next_ticket()
            self._draining[ticket] = len(inbox)
        try:
            for lo in range(0, len(inbox), self.DRAIN_ENTRIES):
                if lo:
                    time.sleep(0)
                self._drain_slice(inbox[lo : lo + self.DRAIN_ENTRIES])
        finally:
            with self._lock:
                del self._draining[ticket]
                self._settled.notify_all()

    def _drain_slice(self, inbox: list[tuple[Any, ...]]) -> None:
        groups: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
        for entry in inbox:
            groups.setdefault(entry[:3], []).append(entry)
        for model, entries in groups.items():
            # An entry: model_name, model_version, variant, ts_us, probability, threshold,
            # answered, rows, then k request ids, k transaction ids, k card ids, k start times.
            counts = [e[7].shape[0] for e in entries]
            ids = (_per_row(entries, counts, 0), _per_row(entries, counts, 1), _per_row(entries, counts, 2))
            ts = np.repeat(np.fromiter((e[3] for e in entries), np.int64, len(entries)), counts)
            probability = np.concatenate([e[4] for e in entries])
            # Compared in double precision, as the responses' decisions were.
            threshold = np.repeat(np.fromiter((e[5] for e in entries), np.float64, len(entries)), counts)
            decision = (probability.astype(np.float64) >= threshold).astype(np.int8)
            answered = np.repeat(np.fromiter((e[6] for e in entries), np.float64, len(entries)), counts)
            started = np.array(_per_row(entries, counts, 3), dtype=np.float64)
            latency = ((answered - started) * 1000.0).astype(np.float32)
            rows = np.concatenate([e[7] for e in entries])
            with self._lock:
                # Into column-major segments: transposed here, a slice at a time between flushes,
                # the flush hands their columns to Parquet without a copy.
                self._put(model, ids, ts, probability, decision, latency, rows, "F")  # type: ignore[arg-type]

    def _segment(self, key: tuple[str, str, str, str]) -> _Segment:
        """A free segment of the key's layout, or a new one (call with the lock held)."""
        free = self._free[key[3]]
        order: Literal["C", "F"] = "C" if key[3] == "C" else "F"
        return (free.pop() if free else _Segment(self._capacity, len(self.feature_names), order)).reset(key)

    def _recycle(self, segments: list[_Segment]) -> None:
        """Keep written (or emptied) segments for reuse, up to the pool's bound (lock held)."""
        for seg in segments:
            free = self._free[seg.key[3]]
            if len(free) < self._max_free:
                free.append(seg)

    def _take(self) -> list[_Segment]:
        """Every segment holding rows, open ones sealed (call with the lock held)."""
        segments = self._sealed + [s for s in self._open.values() if s.rows]
        self._recycle([s for s in self._open.values() if not s.rows])
        self._sealed, self._open = [], {}
        return segments

    @property
    def pending_rows(self) -> int:
        return self._pending

    # ------------------------------------------------------------------ background
    def start(self) -> None:
        """Start the flushing thread (and on Linux its catch-up thread).

        The flushing thread runs at ``SCHED_IDLE`` where the platform has it (``thread_idle``):
        it gets a core only when no other thread of the machine wants it, and a request that
        arrives meanwhile takes the core back at once. At nice 5 (``thread_nice``) it had a
        fifth of a busy core, and a flush's few milliseconds of Parquet encoding delayed the
        requests that arrived meanwhile: at 6,800 requests a second on one core (half the
        peak), a median p99 of 4.55 ms at nice 5 against 2.90 at ``SCHED_IDLE`` and 1.30 with
        the log off (7 interleaved rounds). But with every core saturated such a thread gets
        next to nothing, and an unprivileged thread cannot raise its priority again: so a
        second thread, at ``thread_nice``, flushes in its place whenever it falls behind
        (``CATCH_UP_FLUSHES`` flushes' worth of rows pending, or no flush ended for that many
        intervals). Flushes may then overlap: each thread writes through its own sink.

        PyArrow's Parquet writer (and what PyArrow imports lazily) is imported here, at
        start-up: imported by the first flush it would hold the interpreter for seconds
        while requests wait.
        """
        import pyarrow as pa
        import pyarrow.compute
        import pyarrow.fs
        import pyarrow.parquet

        # Converting a Python list imports pandas when it is installed (PyArrow checks for
        # pandas objects): seconds of a busy interpreter at the first flush, unless done here.
        pa.array(["warm-up"], pa.string())
        self._warm_up()

        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        if self._catch_up_thread is None and self.thread_idle:
            self._catch_up_thread = threading.Thread(target=self._catch_up, name="prediction-log-catch-up", daemon=True)
            self._catch_up_thread.start()

    def _warm_up(self) -> None:
        """Do once, before the first request, what the first flush would otherwise pay for.

        PyArrow's compute kernels (the casts, the dictionary decoding) and its Parquet writer
        set themselves up on first use: the first flush of a process built its table in 16 ms
        instead of 1.4 (holding the interpreter) and encoded it in 23 ms instead of 3, for 7,000
        rows. So a table of a row of each layout is built and encoded here, into memory. And a
        free segment of each layout is allocated and touched, so that the first rows logged
        fill memory the process already has instead of faulting in 4 MiB of fresh pages.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        width = len(self.feature_names)
        rows = np.zeros((2, width), dtype=np.float32)
        segments = []
        for order in ("C", "F"):
            seg = _Segment(2, width, order).reset(("warm-up", "0", "champion", order))  # type: ignore[arg-type]
            seg.put(
                0, 2, (["a", "b"], [None, "t"], [None, 1]), 0, np.zeros(2, np.float32), np.zeros(2, np.int8), 0.0, rows
            )
            segments.append(seg)
        pq.write_table(_table(segments, self.feature_names), pa.BufferOutputStream(), **self._parquet_options)
        with self._lock:
            for order in ("C", "F"):
                if not self._free[order]:
                    seg = _Segment(self._capacity, width, order)  # type: ignore[arg-type]
                    seg.features.fill(0.0)
                    self._free[order].append(seg)

    def _lower_priority(self, idle: bool) -> None:
        """Lower the calling thread's CPU priority only (on Linux a thread id names one thread)."""
        try:
            if idle:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            elif self.thread_nice and hasattr(os, "setpriority"):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.thread_nice)
        except OSError as exc:
            log.warning("prediction log: could not lower the priority of %s: %s", threading.current_thread().name, exc)

    def _run(self) -> None:
        self._lower_priority(self.thread_idle)
        backoff = self.flush_interval_s
        due = time.monotonic() + backoff
        while not self._stop.is_set():
            # Between flushes, the micro-batches are copied into segments every DRAIN_S: a
            # little work often rather than all of it at the flush, which would hold the
            # interpreter (and the core) for milliseconds while requests wait.
            woken = self._wake.wait(timeout=max(0.0, min(self.DRAIN_S, due - time.monotonic())))
            if self._stop.is_set():
                break
            if not woken and time.monotonic() < due:
                self._drain()
                continue
            self._wake.clear()
            ok = self._flush()
            backoff = self.flush_interval_s if ok else min(backoff * 2, 60.0)
            due = time.monotonic() + backoff

    def _catch_up(self) -> None:
        """Flush in the flushing thread's place while it falls behind (see :meth:`start`)."""
        self._lower_priority(False)
        late_s = self.CATCH_UP_FLUSHES * self.flush_interval_s
        while not self._stop.is_set():
            self._behind.wait(timeout=self.flush_interval_s)
            if self._stop.is_set():
                break
            self._behind.clear()
            with self._lock:
                pending, failing = self._pending, self._failing
            late = time.monotonic() - self._flushed_at > late_s
            # A failing sink is the flushing thread's to retry (with its backoff): not behind.
            if pending and not failing and (late or pending >= self.CATCH_UP_FLUSHES * self.flush_rows):
                self.catch_up_flushes += 1
                self._flush()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Write every row logged before this call; False when the sink failed (the rows stay
        queued) or the rows another thread had taken were not written within ``timeout_s``.

        Flushes may overlap (see :meth:`start`): this one waits for the drains and the flushes
        that other threads had begun, so that it returns only when every row logged before it
        is in a file.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            mine = self._next_ticket()
            if not self._settled.wait_for(lambda: min(self._draining, default=mine) >= mine, timeout_s):
                return False
        ok = self._flush(mine)
        with self._lock:
            done = self._settled.wait_for(
                lambda: min(self._flights, default=mine) >= mine, max(0.0, deadline - time.monotonic())
            )
            return ok and done and not self._failing

    def _next_ticket(self) -> int:
        """The next number of the drains and flushes, in the order they began (lock held)."""
        self._ticket += 1
        return self._ticket

    def _flush(self, ticket: int | None = None) -> bool:
        """Drain, then write the rows in segments through this thread's sink (another thread's
        flush may be writing meanwhile; rows another thread is draining wait for the next)."""
        self._drain()
        with self._lock:
            segments = self._take()
            taken = sum(s.rows for s in segments)
            self._pending -= taken  # rows leave the count when taken
            pending = self._pending
            if ticket is None:
                ticket = self._next_ticket()
            if taken:
                self._flights[ticket] = taken
            sink = self._sinks.get(threading.get_ident())
            if sink is None:
                sink = self._sinks[threading.get_ident()] = LocalParquetSink(self._parquet_options)
        if self.metrics is not None:
            self.metrics.log_pending.set(pending)
        if not segments:
            self._flushed_at = time.monotonic()
            return True
        try:
            self._write(segments, sink)
        except Exception as exc:  # any sink error: keep the rows, retry later
            self._requeue(segments)
            with self._lock:
                self._failing = True
                del self._flights[ticket]
                self._settled.notify_all()
            if self.metrics is not None:
                self.metrics.log_failures.inc()
            log.error("prediction log: flush of %d rows to %s failed (will retry): %s", taken, self.root, exc)
            return False
        with self._lock:  # written, and no Arrow array of the flush is left: fill them again
            self._recycle(segments)
            self._failing = False
            del self._flights[ticket]
            self._settled.notify_all()
        self._flushed_at = time.monotonic()
        return True

    def _requeue(self, segments: list[_Segment]) -> None:
        with self._lock:
            self._sealed[:0] = segments
            self._pending += sum(s.rows for s in segments)
            dropped = 0
            while self._pending > self.max_pending_rows and self._sealed:
                oldest, excess = self._sealed[0], self._pending - self.max_pending_rows
                k = min(oldest.rows, excess)
                if k == oldest.rows:
                    self._recycle([self._sealed.pop(0)])
                else:
                    oldest.drop_oldest(k)
                self._pending -= k
                dropped += k
            pending = self._pending
        if self.metrics is not None:
            self.metrics.log_pending.set(pending)
        if dropped:
            self.rows_dropped += dropped
            if self.metrics is not None:
                self.metrics.log_dropped.inc(dropped)
            log.error("prediction log: dropped %d oldest rows (more than %d pending)", dropped, self.max_pending_rows)

    def _write(self, segments: list[_Segment], sink: LocalParquetSink) -> None:
        import pyarrow as pa
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        table = _table(segments, self.feature_names)
        if "://" in self.root:
            fs, base = pafs.FileSystem.from_uri(self.root)
        else:
            fs, base = pafs.LocalFileSystem(), self.root
        base = base.rstrip("/")
        local = isinstance(fs, pafs.LocalFileSystem)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        # The UTC day of each row from the integer microseconds (formatting every timestamp
        # as text cost more than writing the file).
        day_of = table.column("ts").cast(pa.int64()).to_numpy() // _US_PER_DAY
        days = np.unique(day_of)
        # Local files are all written under hidden names first and renamed only when every one
        # is complete: a failure leaves no file of the flush behind, so its retry duplicates nothing.
        written: list[tuple[str, str]] = []
        try:
            for d in days.tolist():
                part = table if len(days) == 1 else table.filter(pa.array(day_of == d))
                day = (_EPOCH + timedelta(days=d)).strftime("%Y-%m-%d")
                directory = f"{base}/date={day}"
                fs.create_dir(directory, recursive=True)
                # Files of at most max_file_rows rows: a flush after a long outage (up to
                # max_pending_rows) does not need one buffer the size of everything pending.
                for lo in range(0, part.num_rows, self.max_file_rows):
                    piece = part.slice(lo, self.max_file_rows)
                    name = f"part-{stamp}-{uuid.uuid4().hex}.parquet"
                    final = f"{directory}/{name}"
                    if local:
                        tmp = f"{directory}/.{name}.tmp"
                        written.append((tmp, final))
                        sink.write(piece, tmp)
                    else:
                        pq.write_table(piece, final, filesystem=fs, **self._parquet_options)
                        with self._lock:
                            self.files.append(final)
        except BaseException:
            for tmp, _ in written:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        for tmp, final in written:
            fs.move(tmp, final)
        with self._lock:
            self.files += [final for _, final in written]
            self.rows_written += table.num_rows
        if self.metrics is not None:
            self.metrics.log_rows.inc(table.num_rows)
        log.debug("prediction log: wrote %d rows", table.num_rows)

    def close(self, timeout_s: float = 20.0) -> None:
        """Stop the threads and write everything pending (graceful shutdown): what a thread's
        flush still holds is waited for, the rest written here."""
        self._stop.set()
        self._wake.set()
        self._behind.set()
        deadline = time.monotonic() + timeout_s
        for thread in (self._thread, self._catch_up_thread):
            if thread is not None:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._thread = self._catch_up_thread = None
        while time.monotonic() < deadline:
            if self.flush(max(0.0, deadline - time.monotonic())) and not self._pending:
                break
            time.sleep(0.5)
        with self._lock:
            left = self._pending + sum(self._flights.values())
        if left:
            log.error("prediction log: %d rows could not be written before shutdown", left)
