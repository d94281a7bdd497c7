"""Several worker processes on one port: spread connections, a dead worker replaced, a graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fraudops_serving.server import reuse_port_socket, worker_defaults
from fraudops_serving.settings import ServingSettings

from .conftest import LiveServer, features, free_port


def _pids(url: str, connections: int) -> list[int]:
    """The worker that answers ``/health`` on each of ``connections`` new connections."""
    pids = []
    for _ in range(connections):
        with httpx.Client(base_url=url) as client:  # a new connection each
            pids.append(int(client.get("/health").json()["pid"]))
    return pids


def test_workers_share_the_port_a_dead_one_is_replaced_and_a_stop_flushes_every_worker(
    make_bundle: Callable[..., Path], live_server: Callable[..., LiveServer]
) -> None:
    from fraudops.monitoring.predlog import read_prediction_log

    bundle = make_bundle("3")
    server = live_server(
        {
            "FRAUDOPS_SERVING_BUNDLE_DIR": str(bundle),
            "FRAUDOPS_SERVING_WORKERS": "2",
            "FRAUDOPS_SERVING_LOG_FLUSH_INTERVAL_S": "3600",  # only the shutdown flushes write rows
        }
    )
    # The kernel spreads connections over the workers' sockets by their addresses: among 32
    # connections both workers appear (all on one: a chance of 2 in 2**32).
    pids = _pids(server.url, 32)
    assert len(set(pids)) == 2, pids
    assert server.process.pid not in pids  # the supervisor itself serves nothing

    # A worker that dies is started again; the other keeps serving meanwhile.
    dead = pids[0]
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            now = set(_pids(server.url, 16))
        except httpx.TransportError:  # queued on the killed worker's socket as it closed: reset
            now = set()
        if dead not in now and len(now) == 2:
            break
        assert time.monotonic() < deadline, f"no replacement for worker {dead}: {now}\n{server.log()[-3000:]}"
        time.sleep(0.5)
    assert f"(pid {dead}) exited with -9; starting it again" in server.log()
    httpx.get(server.url + "/ready").raise_for_status()

    # Scored by both workers over 16 connections: every row is in the log after a graceful stop.
    sent: set[str] = set()
    answered_by: set[int] = set()
    for c in range(16):
        with httpx.Client(base_url=server.url) as client:
            answered_by.add(int(client.get("/health").json()["pid"]))
            r = client.post(
                "/predict/batch",
                json={"transactions": [{"features": features(100 * c + i)} for i in range(40)]},
            )
            assert r.status_code == 200, r.text
            sent.update(p["request_id"] for p in r.json()["predictions"])
            r = client.post("/predict", json={"features": features(c)})
            assert r.status_code == 200, r.text
            sent.add(r.json()["request_id"])
    assert len(answered_by) == 2
    assert server.stopped_gracefully()
    log = server.log()
    assert log.count("Application shutdown complete") == 2
    assert "supervisor: all workers stopped" in log
    now = datetime.now(UTC)
    table = read_prediction_log(server.home / "prediction_log", now - timedelta(days=1), now + timedelta(days=1))
    ids = table.column("request_id").to_pylist()
    assert len(ids) == len(sent) == 16 * 41
    assert set(ids) == sent


def test_a_taken_port_is_one_clear_error(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    port = free_port()
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: nobody may share the port
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = {
            **os.environ,
            "FRAUDOPS_HOME": str(tmp_path),
            "FRAUDOPS_SERVING_BUNDLE_DIR": str(make_bundle("1")),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "fraudops_serving", "--workers", "3", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Address already in use" in proc.stderr


def test_reuse_port_sockets_share_a_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = reuse_port_socket("127.0.0.1", port)
        second.close()
    finally:
        first.close()
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError):
            reuse_port_socket("127.0.0.1", plain.getsockname()[1])


def test_workers_score_batches_on_their_loop_with_their_share_of_the_cores() -> None:
    settings = ServingSettings(workers=2, max_batch_rows=5000)
    assert worker_defaults(settings, cores=2) == {
        "FRAUDOPS_SERVING_INLINE_MAX_ROWS": "5000",
        "FRAUDOPS_SERVING_BATCH_THREADS": "1",
    }
    assert worker_defaults(ServingSettings(workers=4), cores=16)["FRAUDOPS_SERVING_BATCH_THREADS"] == "4"
    assert worker_defaults(ServingSettings(workers=4), cores=2)["FRAUDOPS_SERVING_BATCH_THREADS"] == "1"
