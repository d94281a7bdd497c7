"""The benchmark's open-loop load generator against servers that close connections.

uvicorn closes a keep-alive connection idle for 5 s; a request sent as it does is never
answered. The generator must take its connections in turn (none idles that long at the
benchmark's rates), replace a closed one, count a lost request as an error, and never
wait forever.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_predict as bp

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


class _Server:
    """An HTTP/1.1 keep-alive server on a thread's event loop that answers every request,
    except that it closes the connection instead of answering every ``drop_every``-th one
    (the keep-alive race as the client sees it), and closes connections idle for
    ``idle_s`` (uvicorn's keep-alive timeout). At its ``hog_at``-th request it keeps the
    interpreter for ``hog_s``: to the generator in this process, a pause of its own."""

    def __init__(self, drop_every: int = 0, idle_s: float = 0.0, hog_at: int = 0, hog_s: float = 0.0) -> None:
        self.drop_every, self.idle_s, self.hog_at, self.hog_s = drop_every, idle_s, hog_at, hog_s
        self.requests = self.dropped = self.idle_closed = self.connections = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_s or None)
                except TimeoutError:
                    self.idle_closed += 1
                    return
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                if self.requests == self.hog_at:  # keeps the interpreter: the generator cannot run
                    end = time.perf_counter() + self.hog_s
                    while time.perf_counter() < end:
                        pass
                if self.drop_every and self.requests % self.drop_every == 0:
                    self.dropped += 1
                    return
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def make_server() -> Iterator[type[_Server]]:
    servers: list[_Server] = []

    def make(**kw: float) -> _Server:
        s = _Server(**kw)  # type: ignore[arg-type]
        servers.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in servers:
        s.stop()


def test_lost_requests_count_as_errors_and_their_connections_are_replaced(make_server) -> None:
    server = make_server(drop_every=50)
    raw = bp.http_request(server.port, "/predict", b'{"features": [1.0]}')
    r = bp.open_loop(server.port, raw, rate=2000, seconds=1.0, conns=8)
    assert r["requests"] + r["errors"] == 2000
    assert r["errors"] == server.dropped == 2000 // 50
    assert server.connections == 8 + server.dropped  # each lost request's connection was replaced


def test_connections_are_taken_in_turn_so_none_idles_into_the_keep_alive_timeout(make_server) -> None:
    # 16 connections, 40 requests a second: in turn, each is used every 0.4 s, under the
    # server's 0.6 s idle timeout; last-in first-out, one or two would carry everything and
    # the rest would be closed as idle.
    server = make_server(idle_s=0.6)
    raw = bp.http_request(server.port, "/predict", b'{"features": [1.0]}')
    r = bp.open_loop(server.port, raw, rate=40, seconds=2.0, conns=16)
    assert r["requests"] == 80 and r["errors"] == 0
    assert server.idle_closed == 0


def test_a_connection_closed_while_idle_is_replaced_before_it_carries_a_request(make_server) -> None:
    # 4 connections, 2 requests a second: each idles 2 s, longer than the 0.3 s timeout, so
    # every request goes out on a replacement. One may still meet the race itself (sent in
    # the microseconds in which the server gives up on that connection): lost, and counted.
    server = make_server(idle_s=0.3)
    raw = bp.http_request(server.port, "/predict", b'{"features": [1.0]}')
    r = bp.open_loop(server.port, raw, rate=2, seconds=3.0, conns=4)
    assert r["requests"] + r["errors"] == 6 and r["errors"] <= 1
    assert server.idle_closed >= 4 * 3  # closed again and again while idle: replaced each time


def test_the_generators_own_pauses_are_counted_and_stay_in_the_latency(make_server) -> None:
    # The server thread keeps the interpreter for 40 ms once (the switch interval raised so
    # that it is not made to let go): the generator's loop stops for that long, and the
    # requests it should have sent meanwhile are late by up to as much.
    server = make_server(hog_at=500, hog_s=0.04)
    raw = bp.http_request(server.port, "/predict", b'{"features": [1.0]}')
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.1)
    try:
        r = bp.open_loop(server.port, raw, rate=2000, seconds=1.0, conns=8)
    finally:
        sys.setswitchinterval(interval)
    assert r["requests"] == 2000 and r["errors"] == 0
    assert r["stalls"] >= 1 and 30.0 <= r["stall_max_ms"] <= r["stall_ms"]
    # About 80 requests were due during the pause (4 % of them): the p99 includes it.
    assert r["p99_ms"] >= 15.0
