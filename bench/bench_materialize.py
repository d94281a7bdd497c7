"""Benchmark: Feast materialization into Redis against raw pipelined Redis writes of the same rows.

Run: ``.venv/bin/python bench/bench_materialize.py`` (``--rows``, ``--cards``, ``--repeat``).

Setup: ``--rows`` generated transactions over ``--cards`` cards, loaded into the DuckDB
warehouse, exported as the Feast sources and applied, with the online store on a
``redis-server`` this script starts on a free port (no persistence), so the real
fraudops code path (``fraudops.features.store.materialize``) runs.

Measured in the same run, each on an emptied Redis database:

1. **feast**: ``materialize`` of the ``card_profile`` view over the whole window: Feast
   reads the card rows (one per transaction) from Parquet with DuckDB, keeps the newest
   row per card, serializes the values and writes one hash per card (reading the stored
   event time first, so that an older row never overwrites a newer one).
2. **raw**: the same card rows, from the in-memory Arrow table, written with redis-py:
   ``HSET card:<id>`` of the 12 card features, pipelines of ``--batch`` (1000) commands,
   no transaction. Later rows overwrite earlier ones: the same end state.
3. **raw-latest**: only the newest row per card (what Feast ends up writing), same way.

Rows per second are source rows (transactions) per second for all three; the ratio is
feast / raw. Also printed: one-card online read latency through ``CardFeatureReader``
(what the predictor pays) against a raw ``HMGET`` of one hash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not exe:
        sys.exit("redis-server is not on PATH: install it (apt-get install redis-server / brew install redis)")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                sys.exit("redis-server did not start")
            time.sleep(0.05)


def raw_write(client: Any, table: Any, batch: int) -> float:
    """HSET every row of ``table`` (card_id + card features), pipelined; returns seconds."""
    from fraudops import schema

    started = time.perf_counter()
    ids = table.column(schema.CARD_ID).to_pylist()
    cols = [table.column(n).to_pylist() for n in schema.CARD_FEATURE_NAMES]
    names = list(schema.CARD_FEATURE_NAMES)
    pipe = client.pipeline(transaction=False)
    for i, card in enumerate(ids):
        pipe.hset(f"card:{card}", mapping={n: c[i] for n, c in zip(names, cols, strict=True)})
        if (i + 1) % batch == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def latency_ms(fn: Any, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (n - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="transactions (= card rows)")
    parser.add_argument("--cards", type=int, default=None, help="distinct cards (default rows/4)")
    parser.add_argument("--batch", type=int, default=1000, help="raw pipeline batch size")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each; the best counts")
    parser.add_argument("--json", type=str, default=None, help="also write the figures here")
    args = parser.parse_args()
    cards = args.cards or max(1, args.rows // 4)

    work = Path(tempfile.mkdtemp(prefix="bench-materialize-"))
    proc, port = start_redis(work)
    try:
        os.environ["FRAUDOPS_HOME"] = str(work / "home")
        os.environ["FRAUDOPS_PROFILE"] = "local"
        os.environ["FRAUDOPS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        import pyarrow.compute as pc
        import redis

        from fraudops import schema
        from fraudops.data.generate import generate_transactions
        from fraudops.data.warehouse import open_warehouse
        from fraudops.features.store import CardFeatureReader, apply, export_sources, materialize
        from fraudops.settings import get_settings

        settings = get_settings()
        table = generate_transactions(args.rows, seed=7, n_cards=cards)
        wh = open_warehouse(settings)
        wh.write_transactions(table, replace=True)
        wh.close()
        export_sources(settings)
        apply(settings)
        ts = table.column(schema.EVENT_TIMESTAMP)
        start, end = pc.min(ts).as_py(), pc.max(ts).as_py() + timedelta(seconds=1)
        card_rows = table.select([schema.CARD_ID, schema.EVENT_TIMESTAMP, *schema.CARD_FEATURE_NAMES])
        latest = card_rows.to_pandas().sort_values(schema.EVENT_TIMESTAMP).groupby(schema.CARD_ID).tail(1)
        import pyarrow as pa

        latest_table = pa.Table.from_pandas(latest, preserve_index=False)
        client = redis.Redis(port=port)

        feast_s, raw_s, raw_latest_s = [], [], []
        keys = 0
        for _ in range(args.repeat):
            client.flushdb()
            result = materialize(settings, start, end)
            feast_s.append(result.seconds)
            keys = client.dbsize()
            client.flushdb()
            raw_s.append(raw_write(client, card_rows, args.batch))
            assert client.dbsize() == latest_table.num_rows
            client.flushdb()
            raw_latest_s.append(raw_write(client, latest_table, args.batch))
        assert keys == latest_table.num_rows, (keys, latest_table.num_rows)

        # Correctness of the Feast run, and what an online read costs.
        client.flushdb()
        materialize(settings, start, end)
        reader = CardFeatureReader.open(settings)
        sample = latest.head(200)
        online = reader.get(sample[schema.CARD_ID].tolist())
        for row in sample.to_dict("records"):
            got = online[int(row[schema.CARD_ID])]
            assert all(
                abs(got[n] - float(row[n])) <= 1e-6 * max(1.0, abs(float(row[n]))) for n in schema.CARD_FEATURE_NAMES
            )
        one = int(sample[schema.CARD_ID].iloc[0])
        raw_write(client, latest_table.slice(0, 1), 1)
        feast_p50, feast_p99 = latency_ms(lambda: reader.get([one]), 300)
        raw_key = f"card:{latest_table.column(schema.CARD_ID)[0].as_py()}"
        raw_p50, raw_p99 = latency_ms(lambda: client.hmget(raw_key, list(schema.CARD_FEATURE_NAMES)), 300)

        n = card_rows.num_rows
        best_feast, best_raw, best_latest = min(feast_s), min(raw_s), min(raw_latest_s)
        figures = {
            "rows": n,
            "cards_written": keys,
            "feast_seconds": best_feast,
            "raw_seconds": best_raw,
            "raw_latest_seconds": best_latest,
            "feast_rows_per_s": n / best_feast,
            "raw_rows_per_s": n / best_raw,
            "raw_latest_rows_per_s": n / best_latest,
            "ratio_feast_vs_raw": (n / best_feast) / (n / best_raw),
            "ratio_feast_vs_raw_latest": best_latest / best_feast,
            "online_read_ms_p50_feast": feast_p50,
            "online_read_ms_p99_feast": feast_p99,
            "online_read_ms_p50_raw_hmget": raw_p50,
            "online_read_ms_p99_raw_hmget": raw_p99,
        }
        print(f"materialization into Redis, {n:,} card rows ({keys:,} cards), best of {args.repeat}")
        print(f"  feast materialize        {best_feast:8.2f} s  {n / best_feast:12,.0f} rows/s")
        print(f"  raw HSET, same rows      {best_raw:8.2f} s  {n / best_raw:12,.0f} rows/s")
        print(f"  raw HSET, latest per card{best_latest:8.2f} s  {n / best_latest:12,.0f} rows/s (same end state)")
        print(f"  ratio feast / raw (same rows)        {figures['ratio_feast_vs_raw']:.2f}x")
        print(f"  ratio feast / raw (latest per card)  {figures['ratio_feast_vs_raw_latest']:.2f}x")
        print(
            f"online read of one card: feast {feast_p50:.2f} ms p50 / {feast_p99:.2f} ms p99; "
            f"raw HMGET {raw_p50:.3f} ms p50 / {raw_p99:.3f} ms p99"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
