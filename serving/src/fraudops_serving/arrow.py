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

from typing import Any

import numpy as np

from fraudops_serving.inputs import FLT_MAX, MAX_ID_LENGTH, InputError, RowParser

ID_COLUMNS = ("card_id", "transaction_id", "request_id")


def parse_arrow_batch(
    body: bytes, parser: RowParser, max_rows: int
) -> tuple[np.ndarray, list[int | None], list[str | None], list[str | None], str | None]:
    """Rows, card ids, transaction ids and request ids of an Arrow IPC stream."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise InputError(400, "malformed_arrow", f"the body is not an Arrow IPC stream: {exc}") from None
    n = table.num_rows
    if n == 0:
        raise InputError(422, "empty_batch", "the batch has no rows")
    if n > max_rows:
        raise InputError(413, "batch_too_large", f"the batch has {n:,} rows; the maximum is {max_rows:,}")
    names = table.column_names
    if len(set(names)) != len(names):
        raise InputError(422, "duplicate_columns", "the stream has duplicate column names")
    unknown = [c for c in names if c not in parser.index and c not in ID_COLUMNS]
    if unknown:
        raise InputError(422, "unknown_features", f"unknown column(s) {', '.join(repr(c[:64]) for c in unknown[:5])}")
    card_ids = _ids(table, "card_id", n, integer=True)
    has_cards = all(c is not None for c in card_ids)
    # Column-major while filling (each feature column is one contiguous write), row-major for the model.
    x = np.empty((n, parser.n), dtype=np.float32, order="F")
    online = set(parser.online_names) if parser.online_enabled else set()
    present = set(names)
    missing = [f for f in parser.names if f not in present and not (f in online and has_cards)]
    if missing:
        raise InputError(
            422, "missing_features", f"missing feature column(s) {', '.join(repr(f) for f in missing[:10])}"
        )
    by_name = dict(zip(names, table.columns, strict=True))  # table.column(name) is a linear search
    for j, name in enumerate(parser.names):
        if name not in by_name:
            x[:, j] = np.nan
            continue
        col: Any = by_name[name]
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            raise InputError(422, "invalid_value", f"column {name!r} must be numeric, got {col.type}")
        if col.null_count:
            if name not in online or not has_cards:
                raise InputError(422, "invalid_value", f"column {name!r} has {col.null_count} null(s)")
            col = pc.fill_null(col.cast(pa.float64()), float("nan"))
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
            x[:, j] = col.to_numpy()
    x = np.ascontiguousarray(x)
    # One pass over the matrix: NaN is allowed only where an online feature is to be fetched.
    bad = ~np.isfinite(x)
    if bad.any():
        if online and has_cards:
            cols = [parser.index[f] for f in online]
            bad[:, cols] &= ~np.isnan(x[:, cols])
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise InputError(
                422,
                "out_of_range",
                f"column {parser.names[c]!r} row {r}: NaN, infinite or beyond the float32 range (|x| <= {FLT_MAX:.6g})",
            )
    return x, card_ids, _ids(table, "transaction_id", n), _ids(table, "request_id", n), None


def _ids(table: Any, name: str, n: int, *, integer: bool = False) -> list[Any]:
    import pyarrow as pa

    if name not in table.column_names:
        return [None] * n
    col = table.column(name)
    if integer and not pa.types.is_integer(col.type):
        raise InputError(422, "invalid_card_id", f"column {name!r} must be int64, got {col.type}")
    if not integer and not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise InputError(422, "invalid_id", f"column {name!r} must be a string, got {col.type}")
    values: list[Any] = col.to_pylist()
    if not integer and any(v is not None and not 1 <= len(v) <= MAX_ID_LENGTH for v in values):
        raise InputError(422, "invalid_id", f"column {name!r}: ids must have 1 to {MAX_ID_LENGTH} characters")
    return values


def arrow_response(
    request_ids: list[str],
    transaction_ids: list[str | None],
    probability: np.ndarray,
    decision: np.ndarray,
    versions: list[str],
    variants: list[str],
    sources: np.ndarray,
    metadata: dict[str, str],
) -> bytes:
    """The batch's answers as an Arrow IPC stream (asked for with ``Accept: application/vnd.apache.arrow.stream``).

    Columns as the JSON ``predictions`` items; ``batch_id``, ``model_name`` and ``threshold`` in the schema metadata.
    """
    import pyarrow as pa

    table = pa.table(
        {
            "request_id": pa.array(request_ids, pa.string()),
            "transaction_id": pa.array(transaction_ids, pa.string()),
            "probability": pa.array(probability, pa.float32()),
            "decision": pa.array(decision, pa.int8()),
            "model_version": pa.array(versions, pa.string()).dictionary_encode(),
            "variant": pa.array(variants, pa.string()).dictionary_encode(),
            "feature_source": pa.array(sources.tolist(), pa.string()).dictionary_encode(),
        }
    ).replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())
