"""``POST /predict/batch`` with an Arrow IPC stream body: columnar, no per-number parsing.

For bulk scoring (backfills, re-scoring a day) JSON costs more than the model: a
thousand rows of 128 numbers are 128,000 Python floats to parse. An Arrow stream
(``Content-Type: application/vnd.apache.arrow.stream``) carries one float column per
feature, named as in the manifest, plus optional ``card_id`` (int64),
``transaction_id`` and ``request_id`` (strings). Columns are read without a copy and
stacked once. The same rules as JSON apply: every feature by name (an online feature
may be absent or null when a ``card_id`` is given and online features are on), numeric
columns only, finite float32 values, at most ``max_batch_rows`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fraudops_serving.inputs import FLT_MAX, MAX_ID_LENGTH, InputError, RowParser

if TYPE_CHECKING:
    import pyarrow as pa

ID_COLUMNS = ("card_id", "transaction_id", "request_id")
SOURCES = ("request", "online_store", "fallback")  # feature_source codes 0, 1, 2


@dataclass(slots=True)
class BatchIds:
    """The ids of a batch's rows as Arrow columns (``None``: the column was not sent).

    Kept columnar so that a batch of a thousand rows is not a thousand Python objects
    per column on the request path; :meth:`cards` makes the Python list when a per-row
    decision (online features, canary routing) needs it.
    """

    n: int
    card_ids: pa.Array | None  # int64
    transaction_ids: pa.Array | None  # string
    request_ids: pa.Array | None  # string, nulls allowed (filled from the batch id)
    batch_id: str | None = None

    def cards(self) -> list[int | None]:
        return [None] * self.n if self.card_ids is None else self.card_ids.to_pylist()

    @property
    def all_cards(self) -> bool:
        return self.card_ids is not None and self.card_ids.null_count == 0

    def filled_request_ids(self, batch_id: str) -> pa.Array:
        """Request ids of every row: the one sent, else ``<batch_id>-<row>``."""
        import pyarrow.compute as pc

        if self.request_ids is not None and self.request_ids.null_count == 0:
            return self.request_ids
        generated = row_ids(batch_id, self.n)
        return generated if self.request_ids is None else pc.coalesce(self.request_ids, generated)

    def transactions(self) -> pa.Array:
        import pyarrow as pa

        return pa.nulls(self.n, pa.string()) if self.transaction_ids is None else self.transaction_ids

    def card_column(self) -> pa.Array:
        import pyarrow as pa

        return pa.nulls(self.n, pa.int64()) if self.card_ids is None else self.card_ids


class _IdTemplate:
    """``<prefix>-0 ... <prefix>-<n-1>`` for one prefix length and row count: the offsets
    (shared by every such batch) and the text with the digits in place, whose prefix
    columns are filled in per batch."""

    __slots__ = ("heads", "offsets", "text")

    def __init__(self, width: int, n: int) -> None:
        import pyarrow as pa

        blocks, widths = [], []
        self.heads: list[tuple[int, int, int]] = []  # (start in text, rows, bytes a row) of each block
        pos, start, k = 0, 0, 1
        while start < n:  # rows whose number has k digits: one block of equal-length ids
            stop = min(n, 10**k)
            rows = stop - start
            digits = "".join(f"-{i}" for i in range(start, stop)).encode()
            block = np.zeros((rows, width + k + 1), np.uint8)
            block[:, width:] = np.frombuffer(digits, np.uint8).reshape(rows, k + 1)
            blocks.append(block.reshape(-1))
            widths.append(np.full(rows, block.shape[1], np.int32))
            self.heads.append((pos, rows, block.shape[1]))
            pos, start, k = pos + block.size, stop, k + 1
        self.text = np.concatenate(blocks)
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.concatenate(widths), out=offsets[1:])
        self.offsets = pa.py_buffer(offsets)


_TEMPLATES: dict[tuple[int, int], _IdTemplate] = {}


def row_ids(prefix: str, n: int) -> pa.Array:
    """``<prefix>-0 ... <prefix>-<n-1>`` as an Arrow string array, without a Python object per row.

    The ids of a batch differ from those of the batch before only in the prefix (a batch
    id of the same length): a cached template holds the offsets and the digits, and the
    prefix is broadcast into the first columns of each group of equal-length ids.
    """
    import pyarrow as pa

    head = np.frombuffer(prefix.encode(), np.uint8)
    key = (head.size, n)
    template = _TEMPLATES.get(key)
    if template is None:
        if len(_TEMPLATES) >= 16:
            _TEMPLATES.clear()
        template = _TEMPLATES[key] = _IdTemplate(head.size, n)
    text = template.text.copy()
    for pos, rows, width in template.heads:
        text[pos : pos + rows * width].reshape(rows, width)[:, : head.size] = head
    return pa.StringArray.from_buffers(n, template.offsets, pa.py_buffer(text))


def ids_from_lists(
    cards: list[int | None], txns: list[str | None], rids: list[str | None], batch_id: str | None
) -> BatchIds:
    """:class:`BatchIds` of a JSON batch (lists of Python values)."""
    import pyarrow as pa

    def col(values: list[Any], type_: pa.DataType) -> pa.Array | None:
        return None if all(v is None for v in values) else pa.array(values, type_)

    return BatchIds(len(cards), col(cards, pa.int64()), col(txns, pa.string()), col(rids, pa.string()), batch_id)


class ArrowReader:
    """Parses Arrow IPC stream bodies for one :class:`RowParser`.

    A client sends the same shape of batch again and again: the same schema message and,
    for the same number of rows, the same record-batch metadata (which says where every
    buffer lies in the body). What a schema means (which column is which feature, which
    are ids, what is refused) and where the feature values of a layout lie are worked out
    once and remembered by those message bytes; the request path is then two message
    reads, one strided copy of the features and one finiteness check. Anything else (a
    new shape, several record batches, dictionaries, other column types) takes the
    general path, :func:`parse_arrow_batch`.
    """

    MAX_SCHEMAS = 8
    MAX_LAYOUTS = 64

    def __init__(self, parser: RowParser, max_rows: int) -> None:
        self.parser = parser
        self.max_rows = max_rows
        self._plans: dict[bytes, _Plan] = {}

    def parse(self, body: bytes) -> tuple[np.ndarray, BatchIds, np.ndarray | None]:
        """Rows (float32, ``[rows, features]``), ids, and the feature values as a column-major
        view of ``body`` when they lie there as one float32 block (else None). When there is
        such a view, the rows are that view (read-only, column-major); else a row-major array."""
        import pyarrow as pa

        buf = pa.py_buffer(body)
        try:
            messages = pa.ipc.MessageReader.open_stream(buf)
            first = messages.read_next_message()
            second = messages.read_next_message()
            single = _at_end(messages)
        except StopIteration:  # fewer than two messages: an empty stream, or no stream at all
            single = False
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
            raise InputError(400, "malformed_arrow", f"the body is not an Arrow IPC stream: {exc}") from None
        if not single or first.type != "schema" or second.type != "record batch":
            x, ids = parse_arrow_batch(body, self.parser, self.max_rows)
            return x, ids, None
        key = first.metadata.to_pybytes()
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= self.MAX_SCHEMAS:
                self._plans.clear()
            plan = self._plans[key] = _Plan.of(pa.ipc.read_schema(first), self.parser)
        layout_key = second.metadata.to_pybytes()
        layout = plan.layouts.get(layout_key)
        batch = _read_batch(second, plan.schema) if layout is None or plan.ids else None
        if layout is None:
            assert batch is not None
            if len(plan.layouts) >= self.MAX_LAYOUTS:
                plan.layouts.clear()
            layout = plan.layouts[layout_key] = _Layout.of(batch, plan, second.body.address)
        n = layout.n
        _check_rows(n, self.max_rows)
        if plan.refusal is not None:
            raise InputError(*plan.refusal)
        ids = plan.batch_ids(batch, n)
        parser = self.parser
        if plan.missing and not (ids.all_cards and plan.missing <= set(parser.online_names) and parser.online_enabled):
            raise InputError(
                422, "missing_features", f"missing feature column(s) {', '.join(repr(f) for f in plan.missing_list)}"
            )
        view = None
        if layout.stride:
            # The message body is a zero-copy slice of the request body, and the layout's
            # values lie inside it (checked, never assumed: else the general path).
            at, size = second.body.address - buf.address, second.body.size
            if at >= 0 and at + size <= len(body) and layout.start + layout.stride * (parser.n - 1) + 4 * n <= size:
                view = np.ndarray(
                    (n, parser.n), dtype=np.float32, buffer=body, offset=at + layout.start, strides=(4, layout.stride)
                )
        if view is not None:
            # The rows are the view itself: the copy into the row-major block the model reads
            # is made by Model.predict, in a worker thread that holds no interpreter lock
            # while it copies (on the event loop it would hold up every other request).
            x = view
        else:
            if batch is None:
                batch = _read_batch(second, plan.schema)
            online = set(parser.online_names) if parser.online_enabled and ids.all_cards else set()
            x = _stacked_matrix(dict(zip(plan.schema.names, batch.columns, strict=True)), parser, n, online)
        _check_finite(x, parser, ids.all_cards)
        return x, ids, view


def _read_batch(message: Any, schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    try:
        return pa.ipc.read_record_batch(message, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise InputError(400, "malformed_arrow", f"the body is not an Arrow IPC stream: {exc}") from None


def _at_end(messages: Any) -> bool:
    """Whether the stream has no further message (end-of-stream marker or end of the body)."""
    try:
        messages.read_next_message()
    except StopIteration:
        return True
    return False


@dataclass(slots=True)
class _Plan:
    """What one stream schema means for one parser (worked out once per schema)."""

    schema: pa.Schema
    refusal: tuple[int, str, str] | None  # the InputError every batch of this schema gets
    feature_idx: tuple[int, ...]  # column of each manifest feature, in manifest order (-1: absent)
    ids: dict[str, int]  # id column name -> column
    float32: bool  # every feature present, as float32
    missing: frozenset[str]
    missing_list: tuple[str, ...]
    layouts: dict[bytes, _Layout]

    @classmethod
    def of(cls, schema: pa.Schema, parser: RowParser) -> _Plan:
        import pyarrow as pa

        names = schema.names
        refusal: tuple[int, str, str] | None = None
        unknown = [c for c in names if c not in parser.index and c not in ID_COLUMNS]
        if len(set(names)) != len(names):
            refusal = (422, "duplicate_columns", "the stream has duplicate column names")
        elif unknown:
            shown = ", ".join(repr(c[:64]) for c in unknown[:5])
            refusal = (422, "unknown_features", f"unknown column(s) {shown}")
        index = {c: i for i, c in enumerate(names)}
        feature_idx = tuple(index.get(f, -1) for f in parser.names)
        missing = tuple(f for f in parser.names if f not in index)
        f32 = pa.float32()
        float32 = not missing and all(schema.field(i).type == f32 for i in feature_idx)
        ids = {c: index[c] for c in ID_COLUMNS if c in index}
        return cls(schema, refusal, feature_idx, ids, float32, frozenset(missing), missing[:10], {})

    def batch_ids(self, batch: pa.RecordBatch | None, n: int) -> BatchIds:
        if batch is None:  # no id columns in this schema
            return BatchIds(n, None, None, None)
        by_name = {c: batch.column(i) for c, i in self.ids.items()}
        return BatchIds(
            n, _ids(by_name, "card_id", integer=True), _ids(by_name, "transaction_id"), _ids(by_name, "request_id")
        )


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the feature values of one record-batch layout lie, from the start of the message body."""

    n: int
    start: int
    stride: int  # 0: not one strided float32 block

    @classmethod
    def of(cls, batch: pa.RecordBatch, plan: _Plan, body_address: int) -> _Layout:
        n = batch.num_rows
        if not plan.float32 or n == 0:
            return cls(n, 0, 0)
        found = _strided_layout([batch.column(i) for i in plan.feature_idx], n)
        if found is None:
            return cls(n, 0, 0)
        first, stride = found
        return cls(n, first - body_address, stride)


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise InputError(422, "empty_batch", "the batch has no rows")
    if n > max_rows:
        raise InputError(413, "batch_too_large", f"the batch has {n:,} rows; the maximum is {max_rows:,}")


def _check_finite(x: np.ndarray, parser: RowParser, has_cards: bool) -> None:
    """One pass over the matrix: NaN is allowed only where an online feature is to be fetched."""
    if np.isfinite(x).all():
        return
    bad = ~np.isfinite(x)
    if parser.online_enabled and has_cards and parser.online_idx.size:
        cols = parser.online_idx
        bad[:, cols] &= ~np.isnan(x[:, cols])
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(
            422,
            "out_of_range",
            f"column {parser.names[c]!r} row {r}: NaN, infinite or beyond the float32 range (|x| <= {FLT_MAX:.6g})",
        )


def parse_arrow_batch(body: bytes, parser: RowParser, max_rows: int) -> tuple[np.ndarray, BatchIds]:
    """Rows (float32, row-major) and ids of any Arrow IPC stream (the general path of :class:`ArrowReader`)."""
    import pyarrow as pa

    buf = pa.py_buffer(body)
    try:
        reader = pa.ipc.open_stream(buf)
        batches = list(reader)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise InputError(400, "malformed_arrow", f"the body is not an Arrow IPC stream: {exc}") from None
    n = sum(b.num_rows for b in batches)
    _check_rows(n, max_rows)
    plan = _Plan.of(reader.schema, parser)
    if plan.refusal is not None:
        raise InputError(*plan.refusal)
    if len(batches) == 1:
        batch = batches[0]
    else:  # one array per column
        batch = pa.Table.from_batches(batches, reader.schema).combine_chunks().to_batches()[0]
    ids = plan.batch_ids(batch, n)
    has_cards = ids.all_cards
    online = set(parser.online_names) if parser.online_enabled else set()
    missing = [f for f in parser.names if f in plan.missing and not (f in online and has_cards)]
    if missing:
        raise InputError(
            422, "missing_features", f"missing feature column(s) {', '.join(repr(f) for f in missing[:10])}"
        )
    x = None
    if plan.float32:
        found = _strided_layout([batch.column(i) for i in plan.feature_idx], n)
        if found is not None and 0 <= found[0] - buf.address <= len(body) - found[1] * (parser.n - 1) - 4 * n:
            view = np.ndarray(
                (n, parser.n), dtype=np.float32, buffer=body, offset=found[0] - buf.address, strides=(4, found[1])
            )
            x = np.empty((n, parser.n), dtype=np.float32)
            np.copyto(x, view)
    if x is None:
        by_name = dict(zip(reader.schema.names, batch.columns, strict=True))
        x = _stacked_matrix(by_name, parser, n, online if has_cards else set())
    _check_finite(x, parser, has_cards)
    return x, ids


def _strided_layout(columns: list[Any], n: int) -> tuple[int, int] | None:
    """(address of the first column's values, distance between columns) when the columns are
    float32 without nulls at equal distances in memory, each at least ``n`` values apart.

    That is how an IPC stream of one record batch lays out a table of float32 feature
    columns, so the feature block is one strided view of the body, copied to row-major
    order in one go. ``None`` when the layout is anything else (another type, nulls,
    several batches, compression): the general path.
    """
    import pyarrow as pa

    f32 = pa.float32()
    addresses = np.empty(len(columns), dtype=np.int64)
    for j, col in enumerate(columns):
        if col.type != f32 or col.null_count or col.offset:
            return None
        addresses[j] = col.buffers()[1].address
    stride = int(addresses[1] - addresses[0]) if len(columns) > 1 else 4 * n
    if stride < 4 * n or stride % 4 or int(addresses[0]) % 4:
        return None
    if len(columns) > 2 and not (np.diff(addresses) == stride).all():
        return None
    return int(addresses[0]), stride


def _stacked_matrix(by_name: dict[str, Any], parser: RowParser, n: int, nullable: set[str]) -> np.ndarray:
    """The general path: any numeric column types; nulls (NaN) only in ``nullable`` columns."""
    import pyarrow as pa

    columns: list[Any] = []
    for name in parser.names:
        col = by_name.get(name)
        if col is None:  # an online feature left to the store
            columns.append(pa.nulls(n, pa.float32()))
            continue
        if col.type != pa.float32():
            if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
                raise InputError(422, "invalid_value", f"column {name!r} must be numeric, got {col.type}")
            col = col.cast(pa.float32(), safe=False)  # beyond float32 becomes inf, refused by the caller
        if col.null_count and name not in nullable:
            raise InputError(422, "invalid_value", f"column {name!r} has {col.null_count} null(s)")
        columns.append(col)
    # One C++ call from columns to the row-major matrix the model takes; nulls become NaN.
    return np.asarray(pa.record_batch(columns, names=list(parser.names)).to_tensor(null_to_nan=True, row_major=True))


def _ids(by_name: dict[str, Any], name: str, *, integer: bool = False) -> pa.Array | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if name not in by_name:
        return None
    col = by_name[name]
    if integer:
        if not pa.types.is_integer(col.type):
            raise InputError(422, "invalid_card_id", f"column {name!r} must be int64, got {col.type}")
        try:
            return col.cast(pa.int64())
        except pa.ArrowInvalid:
            raise InputError(422, "invalid_card_id", f"column {name!r}: ids must fit in int64") from None
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise InputError(422, "invalid_id", f"column {name!r} must be a string, got {col.type}")
    lengths = pc.min_max(pc.utf8_length(col)).as_py()
    if lengths["min"] is not None and not (lengths["min"] >= 1 and lengths["max"] <= MAX_ID_LENGTH):
        raise InputError(422, "invalid_id", f"column {name!r}: ids must have 1 to {MAX_ID_LENGTH} characters")
    return col.cast(pa.string())


_ANSWER_SCHEMA: pa.Schema | None = None
_DICTIONARIES: dict[tuple[str, ...], pa.Array] = {}


def _answer_schema() -> pa.Schema:
    global _ANSWER_SCHEMA
    if _ANSWER_SCHEMA is None:
        import pyarrow as pa

        labels = pa.dictionary(pa.int8(), pa.string())
        _ANSWER_SCHEMA = pa.schema(
            [
                ("request_id", pa.string()),
                ("transaction_id", pa.string()),
                ("probability", pa.float32()),
                ("decision", pa.int8()),
                ("model_version", labels),
                ("variant", labels),
                ("feature_source", labels),
            ]
        )
    return _ANSWER_SCHEMA


def _dictionary(values: tuple[str, ...]) -> pa.Array:
    """The string array of ``values``, made once (a handful of label tuples ever occur)."""
    array = _DICTIONARIES.get(values)
    if array is None:
        import pyarrow as pa

        if len(_DICTIONARIES) >= 64:  # model versions come and go: keep the cache small
            _DICTIONARIES.clear()
        array = _DICTIONARIES[values] = pa.array(values, pa.string())
    return array


def arrow_response(
    request_ids: pa.Array,
    transaction_ids: pa.Array,
    probability: np.ndarray,
    decision: np.ndarray,
    variant_codes: np.ndarray,
    variants: tuple[str, ...],
    versions: tuple[str, ...],
    source_codes: np.ndarray,
    metadata: dict[str, str],
) -> bytes:
    """The batch's answers as an Arrow IPC stream (asked for with ``Accept: application/vnd.apache.arrow.stream``).

    Columns as the JSON ``predictions`` items (the low-cardinality ones dictionary-encoded);
    ``batch_id``, ``model_name`` and ``threshold`` in the schema metadata. ``variant_codes``
    index ``variants`` and ``versions``; ``source_codes`` index :data:`SOURCES`. The schema
    and the dictionaries are made once; the codes are ours, in range by construction, so
    they are not validated again.
    """
    import pyarrow as pa

    codes = pa.array(variant_codes, pa.int8())
    labels = pa.DictionaryArray.from_arrays
    batch = pa.RecordBatch.from_arrays(
        [
            request_ids,
            transaction_ids,
            pa.array(probability, pa.float32()),
            pa.array(decision, pa.int8()),
            labels(codes, _dictionary(versions), safe=False),
            labels(codes, _dictionary(variants), safe=False),
            labels(pa.array(source_codes, pa.int8()), _dictionary(SOURCES), safe=False),
        ],
        schema=_answer_schema().with_metadata(metadata),
    )
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, batch.schema)
    writer.write_batch(batch)
    writer.close()
    return bytes(sink.getvalue().to_pybytes())
