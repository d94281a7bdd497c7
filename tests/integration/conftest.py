"""Integration fixtures: real servers started by the tests themselves.

``redis_server`` starts one ``redis-server`` for the session on a free port (no
persistence), waits for PING and kills it at teardown. ``redis_url`` hands each test
an empty database on it. A machine without the binary fails with how to install it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_INSTALL_HINT = (
    "redis-server is not on PATH. Install it (Debian/Ubuntu: `sudo apt-get install redis-server`; "
    "macOS: `brew install redis`) or point REDIS_SERVER at the binary; the tests start their own "
    "server on a free port, nothing needs to be running."
)


@dataclass(frozen=True)
class RedisServer:
    """A running throwaway ``redis-server``."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            # A server with a password answers NOAUTH: it is up all the same.
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def start_redis_server(
    workdir: Path, *extra_args: str, binary: str | None = None, timeout: float = 10.0
) -> RedisServer:
    """Start ``redis-server`` on a free port without persistence; wait until it answers PING.

    ``extra_args`` go to the server's command line (e.g. ``"--requirepass", "pw"``).
    """
    import os

    exe = binary or os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not exe:
        pytest.fail(_INSTALL_HINT, pytrace=False)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "redis.log"
    for _attempt in range(3):  # a port taken between probe and bind: try another
        port = _free_port()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                    *extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _ping("127.0.0.1", port):
                return RedisServer("127.0.0.1", port, proc, log_path)
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    pytest.fail(
        f"redis-server ({exe}) did not answer PING within {timeout:.0f} s; its log: {log_path}\n"
        + log_path.read_text(errors="replace")[-2000:],
        pytrace=False,
    )


def stop_redis_server(server: RedisServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One throwaway ``redis-server`` for the session, killed at teardown."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop_redis_server(server)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A ``redis://`` URL of an empty database on the session's server (flushed after the test)."""
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=0)
    client.flushdb()
    try:
        yield redis_server.url(0)
    finally:
        client.flushdb()
        client.close()
