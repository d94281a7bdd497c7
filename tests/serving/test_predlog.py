"""The prediction log: complete after a graceful shutdown, in the contract's layout, retried on failure."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from fraudops_serving.predlog import Chunk, PredictionLog

from .conftest import NAMES, LiveServer, features


def test_every_scored_row_is_in_the_log_after_a_graceful_shutdown(
    make_bundle: Callable[..., Path], tmp_path: Path, live_server: Callable[..., LiveServer]
) -> None:
    from fraudops.monitoring.predlog import META_COLUMNS, read_prediction_log

    bundle = make_bundle("5")
    # A flush interval far beyond the test: only the shutdown flush can write the rows.
    server = live_server({"FRAUDOPS_SERVING_BUNDLE_DIR": str(bundle), "FRAUDOPS_SERVING_LOG_FLUSH_INTERVAL_S": "3600"})
    sent: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=server.url) as client:
        for i in range(60):
            row = features(i)
            r = client.post("/predict", json={"features": row, "transaction_id": f"t-{i}", "card_id": i})
            assert r.status_code == 200
            sent[r.json()["request_id"]] = row
        rows = [features(100 + i) for i in range(25)]
        r = client.post(
            "/predict/batch",
            json={
                "batch_id": "b",
                "transactions": [{"features": row, "transaction_id": f"b-{i}"} for i, row in enumerate(rows)],
            },
        )
        assert r.status_code == 200
        for p, row in zip(r.json()["predictions"], rows, strict=True):
            sent[p["request_id"]] = row
        assert not list((server.home / "prediction_log").rglob("*.parquet"))  # nothing flushed yet
    assert server.stopped_gracefully()

    now = datetime.now(UTC)
    table = read_prediction_log(
        server.home / "prediction_log", now - timedelta(days=1), now + timedelta(days=1), variants=None
    )
    assert table.num_rows == 85
    assert table.column_names == [*META_COLUMNS, *NAMES]
    assert set(table.column("request_id").to_pylist()) == set(sent)
    assert set(table.column("variant").to_pylist()) == {"champion"}
    assert set(table.column("model_version").to_pylist()) == {"5"}
    for rec in table.slice(0, 10).to_pylist():
        expected = sent[rec["request_id"]]
        np.testing.assert_allclose([rec[n] for n in NAMES], [expected[n] for n in NAMES], rtol=1e-6)
        assert 0.0 <= rec["probability"] <= 1.0 and rec["decision"] in (0, 1) and rec["latency_ms"] > 0
    files = list((server.home / "prediction_log").rglob("*.parquet"))
    assert all(f.parent.name.startswith("date=") and f.name.startswith("part-") for f in files)
    schema = pq.read_schema(files[0])
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]" and str(schema.field("decision").type) == "int8"


def _chunk(n: int, start: int = 0, *, request_ids: Any = None, cards: Any = None, features: Any = None) -> Chunk:
    return Chunk(
        [f"r{start + i}" for i in range(n)] if request_ids is None else request_ids,
        1_700_000_000_000_000,
        [None] * n,
        [start + i for i in range(n)] if cards is None else cards,
        "m",
        "1",
        "champion",
        np.full(n, 0.5, np.float32),
        np.zeros(n, np.int8),
        1.0,
        np.zeros((n, 3), np.float32) if features is None else features,
    )


def test_a_failed_flush_keeps_the_rows_and_the_next_one_writes_them(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log directory should be")
    log = PredictionLog(str(blocker), ["a", "b", "c"])
    log.append(_chunk(10))
    assert log.flush() is False and log.pending_rows == 10
    log.append(_chunk(5, start=10))
    blocker.unlink()
    assert log.flush() is True and log.pending_rows == 0
    table = pq.ParquetDataset(str(blocker)).read()
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(15))


def test_oldest_rows_are_dropped_and_counted_only_beyond_the_bound(tmp_path: Path) -> None:
    from fraudops_serving.metrics import Metrics

    blocker = tmp_path / "log"
    blocker.write_text("not a directory")
    metrics = Metrics()
    log = PredictionLog(str(blocker), ["a", "b", "c"], metrics=metrics, max_pending_rows=25)
    for i in range(4):
        log.append(_chunk(10, start=10 * i))
    assert log.flush() is False
    # The bound is kept to the row: the 15 oldest go, the 25 newest stay and are written later.
    assert log.pending_rows == 25 and log.rows_dropped == 15
    assert metrics.log_dropped._value.get() == 15
    blocker.unlink()
    assert log.flush() is True
    table = pq.ParquetDataset(str(blocker)).read()
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(15, 40))
    assert sorted(table.column("card_id").to_pylist()) == list(range(15, 40))


def test_only_the_columns_that_shrink_are_compressed(tmp_path: Path) -> None:
    """Snappy on the callers' ids and the labels; not on the features (floats) nor on the
    request ids (random hex), where it costs encode time and saves nothing."""
    log = PredictionLog(str(tmp_path / "log"), ["a", "b", "c"])
    log.append(_chunk(50))
    assert log.flush() is True
    meta = pq.ParquetFile(log.files[0]).metadata.row_group(0)
    codecs = {meta.column(i).path_in_schema: meta.column(i).compression for i in range(meta.num_columns)}
    assert {c for c, codec in codecs.items() if codec == "UNCOMPRESSED"} == {"request_id", "a", "b", "c"}
    assert codecs["ts"] == codecs["transaction_id"] == codecs["card_id"] == "SNAPPY"


def test_append_refuses_rows_of_another_width(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), ["a", "b"])
    with pytest.raises(ValueError, match="3 features, the log 2"):
        log.append(_chunk(1))


def test_single_rows_and_batches_interleaved_are_all_written_once(tmp_path: Path) -> None:
    """Single rows go into column buffers (sealed when full or at a flush), batches as chunks."""
    import pyarrow.dataset as ds

    log = PredictionLog(str(tmp_path / "log"), ["a", "b", "c"], flush_rows=8)  # buffers of 8 rows
    expected: dict[str, tuple[str, list[float]]] = {}
    for i in range(30):
        variant = "challenger" if i % 3 == 0 else "champion"
        row = np.array([i, i + 0.5, -i], dtype=np.float32)
        log.append_row(f"s{i}", 1_700_000_000_000_000 + i, None, i, "m", "2", variant, 0.25, 0, 1.5, row)
        expected[f"s{i}"] = (variant, row.tolist())
        if i == 10:
            log.append(_chunk(5, start=100))
            expected.update({f"r{100 + j}": ("champion", [0.0, 0.0, 0.0]) for j in range(5)})
    assert log.pending_rows == 35
    assert log.flush() is True and log.pending_rows == 0
    table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 35 and len(set(table.column("request_id").to_pylist())) == 35
    for rec in table.to_pylist():
        variant, values = expected[rec["request_id"]]
        assert rec["variant"] == variant and [rec["a"], rec["b"], rec["c"]] == values
        if rec["request_id"].startswith("s"):
            i = int(rec["request_id"][1:])
            assert rec["card_id"] == i and rec["ts"].timestamp() == pytest.approx(1_700_000_000 + i / 1e6)
    with pytest.raises(ValueError, match="4 features, the log 3"):
        log.append_row("x", 0, None, None, "m", "9", "champion", 0.5, 0, 1.0, np.zeros(4, np.float32))


def test_micro_batches_fill_the_column_buffers_across_their_ends(tmp_path: Path) -> None:
    """``append_rows`` (a micro-batch of /predict) splits a batch over full buffers, in order."""
    import pyarrow.dataset as ds

    log = PredictionLog(str(tmp_path / "log"), ["a", "b"], flush_rows=8)  # buffers of 8 rows
    ids: list[str] = []
    start = 0
    for k in (3, 7, 1, 12, 5):  # crosses the 8-row boundary several times, once by more than a buffer
        x = np.column_stack([np.arange(start, start + k), -np.arange(start, start + k)]).astype(np.float32)
        batch_ids = [f"m{i}" for i in range(start, start + k)]
        log.append_rows(
            batch_ids,
            1_700_000_000_000_000,
            [f"t{i}" for i in range(start, start + k)],
            list(range(start, start + k)),
            "m",
            "4",
            "champion",
            np.full(k, 0.75, np.float32),
            np.ones(k, np.int8),
            np.full(k, 2.0),
            x,
        )
        ids += batch_ids
        start += k
    assert log.pending_rows == 28
    assert log.flush() is True
    table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
    got = sorted(table.to_pylist(), key=lambda r: r["card_id"])
    assert [r["request_id"] for r in got] == ids
    assert all(r["a"] == i and r["b"] == -i and r["transaction_id"] == f"t{i}" for i, r in enumerate(got))
    assert {(r["probability"], r["decision"], r["latency_ms"], r["model_version"]) for r in got} == {
        (0.75, 1, 2.0, "4")
    }
    with pytest.raises(ValueError, match="3 features, the log 2"):
        log.append_rows(
            ["x"], 0, [None], [None], "m", "4", "champion", np.ones(1), np.ones(1), np.ones(1), np.ones((1, 3))
        )


def test_micro_batches_are_drained_between_flushes_in_slices_and_in_order(tmp_path: Path) -> None:
    """The flushing thread copies /predict's micro-batches into segments every ``DRAIN_S``
    between flushes, ``DRAIN_ENTRIES`` at a time; the file holds every row once, in order,
    with the decisions and latencies derived from the probabilities and start times."""
    import time

    import pyarrow.dataset as ds

    log = PredictionLog(str(tmp_path / "log"), ["a", "b"], flush_interval_s=30.0)
    log.DRAIN_ENTRIES = 3  # 10 micro-batches: 4 slices
    log.start()
    try:
        ids: list[str] = []
        start = 0
        for k in (1, 4, 2, 7, 1, 3, 5, 2, 1, 6):
            rows = np.column_stack([np.arange(start, start + k), -np.arange(start, start + k)]).astype(np.float32)
            batch = [f"r{i}" for i in range(start, start + k)]
            p = np.linspace(0.0, 1.0, k, dtype=np.float32)
            log.append_scored(
                batch, 1_700_000_000_000_000, [None] * k, list(range(start, start + k)), "m", "4", "champion",
                p, 0.5, [10.0] * k, 10.002, rows,
            )  # fmt: skip
            ids += batch
            start += k
        deadline = time.monotonic() + 10
        while log._inbox and time.monotonic() < deadline:  # drained by the thread, well before its flush
            time.sleep(0.01)
        assert not log._inbox and log.pending_rows == start and not log.files
    finally:
        log.close()
    table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
    got = table.to_pylist()
    assert [r["request_id"] for r in got] == ids and [r["card_id"] for r in got] == list(range(start))
    assert all(r["a"] == i and r["b"] == -i for i, r in enumerate(got))
    assert all(r["decision"] == int(r["probability"] >= 0.5) for r in got)
    assert all(r["latency_ms"] == pytest.approx(2.0, abs=1e-3) for r in got)


def test_logged_rows_hold_nothing_of_the_request_and_reused_segments_keep_earlier_rows(tmp_path: Path) -> None:
    """Rows are copied in when logged (the request's arrays can go at once, an Arrow id column
    read from a body too), and segments written once are filled again without touching what
    was written from them."""
    import gc
    import weakref

    import pyarrow as pa
    import pyarrow.dataset as ds

    log = PredictionLog(str(tmp_path / "log"), ["a", "b"], flush_rows=6)  # segments of 6 rows
    expected: dict[str, tuple[float, float, int | None]] = {}
    for flush in range(3):
        for req in range(4):  # 4 requests of 4 rows: each flush spans 3 segments
            n, first = 4, 100 * flush + 10 * req
            features = np.column_stack([np.arange(first, first + n), -np.arange(first, first + n)]).astype(np.float32)
            backing = np.arange(first, first + n, dtype=np.int64)  # an id column whose memory is a request's
            cards = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(backing)])
            rids = [f"q{first + i}" for i in range(n)]
            log.append(_chunk(n, request_ids=rids, cards=cards, features=features.T.copy().T))
            refs = [weakref.ref(features), weakref.ref(backing)]
            del features, backing, cards
            gc.collect()
            assert [r() for r in refs] == [None, None]  # nothing of the request is held
            expected.update({rids[i]: (first + i, -(first + i), first + i) for i in range(n)})
        assert log.flush() is True
    table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(expected) == 48
    for rec in table.to_pylist():
        assert (rec["a"], rec["b"], rec["card_id"]) == expected[rec["request_id"]]


def test_row_major_and_column_major_rows_keep_their_ids_in_one_file(tmp_path: Path) -> None:
    """Single rows go to row-major segments, column-major batches (an Arrow body's view) to
    column-major ones; one flush writes both, every row with its own ids and values."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    log = PredictionLog(str(tmp_path / "log"), ["a", "b", "c"], flush_rows=5)  # segments of 5 rows
    expected: dict[str, tuple[list[float], float, int]] = {}
    for i in range(12):
        row = np.array([i, 2 * i, 3 * i], dtype=np.float32)
        log.append_row(f"s{i}", 1_700_000_000_000_000, f"t{i}", i, "m", "1", "champion", i / 100, i % 2, 1.0, row)
        expected[f"s{i}"] = (row.tolist(), i / 100, i)
        if i % 4 == 0:  # a batch of 7 rows as a column-major view, between single rows
            x = np.asfortranarray(np.arange(21, dtype=np.float32).reshape(7, 3) + 1000 * (i + 1))
            ids = pa.array([f"b{i}-{j}" for j in range(7)])
            cards = pa.array([10_000 * (i + 1) + j for j in range(7)], pa.int64())
            p = np.linspace(0.5, 0.9, 7, dtype=np.float32)
            log.append(
                Chunk(
                    ids,
                    1_700_000_000_000_000,
                    pa.nulls(7, pa.string()),
                    cards,
                    "m",
                    "1",
                    "champion",
                    p,
                    np.ones(7, np.int8),
                    2.0,
                    x,
                )
            )
            expected.update({f"b{i}-{j}": (x[j].tolist(), float(p[j]), 10_000 * (i + 1) + j) for j in range(7)})
    assert log.flush() is True
    table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(expected) == 12 + 3 * 7
    for rec in table.to_pylist():
        values, probability, card = expected[rec["request_id"]]
        assert [rec["a"], rec["b"], rec["c"]] == values and rec["card_id"] == card
        assert rec["probability"] == pytest.approx(probability, rel=1e-6)
        assert rec["transaction_id"] == (f"t{card}" if rec["request_id"].startswith("s") else None)


def test_local_files_are_written_around_the_page_cache_exactly_and_reuse_one_buffer(tmp_path: Path) -> None:
    """The log's files on a local disk go through O_DIRECT from one retained buffer: each file
    has exactly its Parquet bytes (the padded last block truncated away), the buffer grows
    when a file does not fit and is kept for the next flushes."""
    import pyarrow as pa

    from fraudops_serving.predlog import LocalParquetSink

    sink = LocalParquetSink({"use_dictionary": False, "compression": "none"})
    rng = np.random.default_rng(0)
    small = pa.table({"x": rng.normal(size=1000).astype(np.float32)})
    size = sink.write(small, str(tmp_path / "small.parquet"))
    assert sink.direct and size == (tmp_path / "small.parquet").stat().st_size and size % 4096 != 0
    assert pq.read_table(tmp_path / "small.parquet").equals(small)
    kept = sink.buffer_bytes
    # Long incompressible strings: far more than the first estimate (64 bytes a string).
    text = [rng.bytes(1500).hex() for _ in range(3000)]
    big = pa.table({"s": pa.array(text), "x": rng.normal(size=3000).astype(np.float32)})
    size = sink.write(big, str(tmp_path / "big.parquet"))
    assert size == (tmp_path / "big.parquet").stat().st_size > kept
    assert sink.buffer_bytes > kept and pq.read_table(tmp_path / "big.parquet").equals(big)
    grown = sink.buffer_bytes
    sink.write(small, str(tmp_path / "again.parquet"))
    assert sink.buffer_bytes == grown and pq.read_table(tmp_path / "again.parquet").equals(small)


def test_a_disk_that_refuses_direct_io_gets_the_file_through_the_page_cache(tmp_path: Path) -> None:
    """Direct I/O refused (here: a block size the kernel does not accept, so the write is
    refused as it would be by a filesystem without O_DIRECT): the same file, written the
    ordinary way, and every later file too."""
    import pyarrow as pa

    from fraudops_serving.predlog import LocalParquetSink

    class Misaligned(LocalParquetSink):
        BLOCK = 1000  # not a multiple of any disk's sector: the kernel answers EINVAL

    sink = Misaligned({})
    table = pa.table({"x": np.arange(5000, dtype=np.float32)})
    size = sink.write(table, str(tmp_path / "a.parquet"))
    assert sink.direct is False
    assert size == (tmp_path / "a.parquet").stat().st_size and pq.read_table(tmp_path / "a.parquet").equals(table)
    sink.write(table, str(tmp_path / "b.parquet"))
    assert pq.read_table(tmp_path / "b.parquet").equals(table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]  # nothing half-written left


def test_a_large_flush_is_split_into_files_and_a_failed_one_publishes_none(tmp_path: Path) -> None:
    """At most max_file_rows rows a file; the files of a flush appear only when all are written:
    a flush that fails part-way (here the second day's directory cannot be made) leaves no
    file behind, and its retry writes every row once."""
    import dataclasses

    import pyarrow.dataset as ds

    root = tmp_path / "log"
    log = PredictionLog(str(root), ["a", "b", "c"], max_file_rows=10)
    day2 = 1_700_000_000_000_000 + 86_400_000_000  # _chunk's rows are on 2023-11-14, these on the 15th
    log.append(_chunk(25))
    log.append(dataclasses.replace(_chunk(7, start=25), ts_us=day2))
    root.mkdir()
    (root / "date=2023-11-15").write_text("not a directory")  # day2's partition cannot be made
    assert log.flush() is False and log.pending_rows == 32
    # Day 1's three files were written, then taken back: no file of the flush is left.
    assert [p.name for p in root.rglob("*") if p.is_file()] == ["date=2023-11-15"]
    (root / "date=2023-11-15").unlink()
    assert log.flush() is True
    files = sorted(root.rglob("*.parquet"))
    sizes = {
        d: sorted(len(pq.read_table(f)) for f in files if f.parent.name == d)
        for d in ("date=2023-11-14", "date=2023-11-15")
    }
    assert sizes == {"date=2023-11-14": [5, 10, 10], "date=2023-11-15": [7]}
    table = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(32))


def test_the_flushing_thread_runs_at_sched_idle_and_its_catch_up_thread_at_the_nice_value(tmp_path: Path) -> None:
    import os
    import threading
    import time

    log = PredictionLog(str(tmp_path / "log"), ["a"], flush_interval_s=30.0, thread_nice=7)
    log.start()
    try:
        threads = {t.name: t for t in threading.enumerate()}
        flushing, catch_up = threads["prediction-log"], threads["prediction-log-catch-up"]
        deadline = time.monotonic() + 5
        while os.getpriority(os.PRIO_PROCESS, catch_up.native_id or 0) != 7:  # set by the thread as it starts
            assert time.monotonic() < deadline
        assert os.sched_getscheduler(flushing.native_id or 0) == os.SCHED_IDLE
        assert os.sched_getscheduler(catch_up.native_id or 0) == os.SCHED_OTHER
    finally:
        log.close()
    assert not any(t.name.startswith("prediction-log") for t in threading.enumerate())

    plain = PredictionLog(str(tmp_path / "plain"), ["a"], flush_interval_s=30.0, thread_idle=False)
    plain.start()
    try:
        names = {t.name: t for t in threading.enumerate()}
        assert "prediction-log-catch-up" not in names
        assert os.sched_getscheduler(names["prediction-log"].native_id or 0) == os.SCHED_OTHER
    finally:
        plain.close()


def test_with_every_core_busy_the_catch_up_thread_flushes_in_the_idle_threads_place(tmp_path: Path) -> None:
    """A busy loop on the one core this thread and the log's threads may use: the flushing
    thread, at SCHED_IDLE, gets next to nothing of it, and the catch-up thread (nice 5) writes
    the rows instead, while the core stays busy; nothing is lost."""
    import os
    import subprocess
    import sys
    import time

    import pyarrow.dataset as ds

    cpu = max(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # this thread, and the threads it starts from now on
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(hog.pid, {cpu})
    log = PredictionLog(str(tmp_path / "log"), ["a", "b", "c"], flush_interval_s=0.2, flush_rows=500)
    try:
        log.start()
        for i in range(20):
            log.append(_chunk(100, 100 * i))
            time.sleep(0.05)
        deadline = time.monotonic() + 20
        while log.rows_written < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.catch_up_flushes >= 1 and log.rows_written >= 1000  # written while the core was busy
    finally:
        hog.kill()
        hog.wait()
        os.sched_setaffinity(0, before)
        log.close()
    table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("card_id").to_pylist()) == list(range(2000))  # each row once


def test_a_flush_waits_for_what_the_flushing_thread_is_draining(tmp_path: Path) -> None:
    """flush() returns only when every row logged before it is in a file, even when the
    flushing thread is draining those rows at that moment (one micro-batch a slice here, so
    that its drain lasts)."""
    import time

    import pyarrow.dataset as ds

    log = PredictionLog(str(tmp_path / "log"), ["a", "b"], flush_interval_s=30.0)
    log.DRAIN_S, log.DRAIN_ENTRIES = 0.001, 1
    log.start()
    try:
        n = 0
        for _ in range(5):
            for _ in range(400):
                rows = np.full((1, 2), n, np.float32)
                log.append_scored(
                    [f"r{n}"], 1_700_000_000_000_000, [None], [n], "m", "4", "champion",
                    np.zeros(1, np.float32), 0.5, [1.0], 1.0, rows,
                )  # fmt: skip
                n += 1
            time.sleep(0.005)  # the thread takes them all and drains them, one a slice, for longer
            assert log.flush() is True
            table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
            assert sorted(table.column("card_id").to_pylist()) == list(range(n))
    finally:
        log.close()


def test_the_warm_up_at_start_logs_nothing(tmp_path: Path) -> None:
    """start() builds and encodes a table of its own (PyArrow's first-use costs, paid before the
    first request), in memory: no file, no row, and the log's rows afterwards are only its own."""
    import pyarrow.dataset as ds

    log = PredictionLog(str(tmp_path / "log"), ["a", "b", "c"], flush_interval_s=30.0)
    log.start()
    assert log.pending_rows == 0 and not (tmp_path / "log").exists()
    log.append(_chunk(5))
    log.close()
    table = ds.dataset(str(tmp_path / "log"), format="parquet", partitioning="hive").to_table()
    assert table.column("request_id").to_pylist() == [f"r{i}" for i in range(5)]
    assert set(table.column("model_name").to_pylist()) == {"m"} and log.rows_written == 5
