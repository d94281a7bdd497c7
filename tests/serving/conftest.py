"""Fixtures of the predictor's tests: real bundles (real ONNX graphs), real servers.

Bundles are built with :mod:`fraudops_serving.devtools` (``onnx.helper``: the production
architecture, input ``features`` float32 ``[batch, N]``, output ``probability``) with the
feature names of :mod:`fraudops.schema`. Apps run on a directory source; tests that need
the process boundary (graceful shutdown, hot swap under load) start ``fraudops-serve``
as a subprocess on a free port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fraudops import schema

NAMES = list(schema.FEATURE_NAMES)
ADMIN_KEY = "admin-key-0123456789abcdef"
SCORING_KEY = "scoring-key-0123456789abcdef"


def features(seed: int = 0) -> dict[str, float]:
    """One valid transaction, features by name."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {n: round(float(v), 5) for n, v in zip(NAMES, rng.normal(0, 1, len(NAMES)), strict=True)}


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """``make_bundle(version, seed=..., threshold=..., where=...)`` writes a real bundle."""
    from fraudops_serving.devtools import write_bundle

    def make(version: str = "1", *, seed: int | None = None, where: Path | None = None, **kw: Any) -> Path:
        target = where or tmp_path / "bundles" / f"v{version}-{time.monotonic_ns()}"
        return write_bundle(target, NAMES, version=version, seed=int(version) if seed is None else seed, **kw)

    return make


def publish(src: Path, dst: Path) -> None:
    """Replace bundle directory ``dst`` with ``src`` by renames (what ``fraudops export`` does)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = dst.with_name(f".{dst.name}.old-{time.monotonic_ns()}")
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        import shutil

        shutil.rmtree(old)


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``app_factory(bundle_dir, **settings)`` -> (TestClient, app); the first refresh is done."""
    from fastapi.testclient import TestClient

    from fraudops_serving.app import create_app
    from fraudops_serving.manager import ModelManager
    from fraudops_serving.metrics import Metrics
    from fraudops_serving.settings import ServingSettings
    from fraudops_serving.sources import make_source

    clients: list[Any] = []

    def factory(bundle_dir: Path | None, **overrides: Any) -> tuple[Any, Any]:
        settings = ServingSettings(home=tmp_path / "home", bundle_dir=bundle_dir, **overrides)
        metrics = Metrics()
        manager = ModelManager(settings, make_source(settings), metrics)
        manager.refresh()
        app = create_app(settings, manager=manager, metrics=metrics, background=False)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client, app

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A ``fraudops-serve`` process on a free port."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    home: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code.

        uvicorn re-raises the signal after its graceful shutdown, so a clean stop exits
        with -SIGTERM; the log's "Application shutdown complete" tells it from a kill.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                pytest.fail(f"the predictor did not stop within {timeout} s; log:\n{self.log()[-3000:]}")
        return int(self.process.returncode)

    def stopped_gracefully(self) -> bool:
        code = self.stop()
        return code in (0, -signal.SIGTERM) and "Application shutdown complete" in self.log()


def start_server(home: Path, env: dict[str, str], *, ready: bool = True, timeout: float = 60.0) -> LiveServer:
    """Start the predictor (``python -m fraudops_serving``) and wait for /health (and /ready)."""
    import httpx

    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / f"server-{port}.log"
    full_env = {
        **os.environ,
        "FRAUDOPS_HOME": str(home),
        "FRAUDOPS_SERVING_HOST": "127.0.0.1",
        "FRAUDOPS_SERVING_PORT": str(port),
        **env,
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraudops_serving"], env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    server = LiveServer(proc, port, log_path, home)
    path = "/ready" if ready else "/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the predictor exited with {proc.returncode}; log:\n{server.log()[-3000:]}")
        try:
            if httpx.get(server.url + path, timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"the predictor did not answer {path} within {timeout} s; log:\n{server.log()[-3000:]}")


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``live_server(env, ready=True)`` starts a predictor process; all are stopped at teardown."""
    servers: list[LiveServer] = []

    def start(env: dict[str, str], *, ready: bool = True, home: Path | None = None) -> LiveServer:
        server = start_server(home or tmp_path / f"home-{len(servers)}", env, ready=ready)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
