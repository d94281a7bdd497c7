"""The Arrow batch reader: what it remembers per schema and layout never serves stale data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fraudops_serving.arrow import ArrowReader, row_ids
from fraudops_serving.inputs import InputError, RowParser

from .conftest import NAMES


def _stream(columns: dict[str, Any]) -> bytes:
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _features(x: np.ndarray) -> dict[str, Any]:
    return {name: pa.array(x[:, j], pa.float32()) for j, name in enumerate(NAMES)}


@pytest.fixture
def reader() -> ArrowReader:
    return ArrowReader(RowParser(NAMES), max_rows=1000)


def test_the_same_layout_again_reads_the_new_values(reader: ArrowReader) -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):  # the first body works the layout out, the others reuse it
        x = rng.normal(0, 1, (6, len(NAMES))).astype(np.float32)
        got, ids, view = reader.parse(_stream(_features(x)))
        np.testing.assert_array_equal(got, x)
        assert ids.n == 6
        # The rows are the column-major view of the body itself (the log copies from it; the
        # model's row-major copy is made in the worker thread), and the body cannot be changed through it.
        assert view is not None and got is view
        assert got.flags.f_contiguous and not got.flags.writeable
        np.testing.assert_array_equal(view, x)
    assert len(reader._plans) == 1 and len(next(iter(reader._plans.values())).layouts) == 1


def test_ids_are_read_from_every_body_and_row_counts_get_their_own_layout(reader: ArrowReader) -> None:
    rng = np.random.default_rng(1)
    for n, tag in ((4, "a"), (4, "b"), (9, "c")):  # same metadata for a and b: only the ids' bytes differ
        x = rng.normal(0, 1, (n, len(NAMES))).astype(np.float32)
        cols = _features(x) | {
            "request_id": pa.array([f"{tag}-{i}" for i in range(n)]),
            "card_id": pa.array(range(n), pa.int64()),
        }
        got, ids, _ = reader.parse(_stream(cols))
        np.testing.assert_array_equal(got, x)
        assert ids.filled_request_ids("unused").to_pylist() == [f"{tag}-{i}" for i in range(n)]
        assert ids.cards() == list(range(n))
    plan = next(iter(reader._plans.values()))
    assert sorted(layout.n for layout in plan.layouts.values()) == [4, 9]


def test_refusals_hold_for_every_body_of_a_remembered_schema(reader: ArrowReader) -> None:
    x = np.zeros((3, len(NAMES)), dtype=np.float32)
    body = _stream(_features(x) | {"surprise": pa.array([1.0, 2.0, 3.0])})
    for _ in range(2):
        with pytest.raises(InputError) as err:
            reader.parse(body)
        assert (err.value.status, err.value.code) == (422, "unknown_features")
        assert "'surprise'" in err.value.message
    ok = _stream(_features(x))
    reader.parse(ok)
    x[2, 5] = np.nan  # same layout as `ok`: the remembered fast path still checks every value
    with pytest.raises(InputError) as err:
        reader.parse(_stream(_features(x)))
    assert err.value.code == "out_of_range" and repr(NAMES[5]) in err.value.message


def test_a_truncated_or_foreign_body_is_a_400_even_with_a_remembered_layout(reader: ArrowReader) -> None:
    x = np.ones((5, len(NAMES)), dtype=np.float32)
    body = _stream(_features(x))
    reader.parse(body)
    for bad in (body[: len(body) // 2], body[:-9], b"\xff\xff\xff\xff" + body[4:40], b"not arrow at all"):
        with pytest.raises(InputError) as err:
            reader.parse(bad)
        assert err.value.status == 400 and err.value.code == "malformed_arrow", err.value.message


def test_too_many_rows_are_refused_before_any_copy() -> None:
    reader = ArrowReader(RowParser(NAMES), max_rows=3)
    with pytest.raises(InputError) as err:
        reader.parse(_stream(_features(np.zeros((4, len(NAMES)), dtype=np.float32))))
    assert (err.value.status, err.value.code) == (413, "batch_too_large")


@pytest.mark.parametrize("n", [1, 9, 10, 11, 100, 1001, 12_345])
def test_generated_request_ids_are_the_prefix_and_the_row(n: int) -> None:
    got = row_ids("batch-7", n)
    assert got.type == pa.string() and len(got) == n
    assert got.to_pylist() == [f"batch-7-{i}" for i in range(n)]
    # The next batch of that size and prefix length reuses the cached template: its own prefix,
    # and the ids made before are unchanged (each call has its own text).
    other = row_ids("batch-8", n)
    assert other.to_pylist() == [f"batch-8-{i}" for i in range(n)]
    assert got.to_pylist()[-1] == f"batch-7-{n - 1}"
    assert row_ids("b", n).to_pylist() == [f"b-{i}" for i in range(n)]
