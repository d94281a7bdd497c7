"""Run the predictor: ``fraudops-serve`` (the container's command) and ``fraudops serve``.

Both start uvicorn with the app factory :func:`build_app`, uvloop and httptools, no
access log (it would cost more than scoring a row; requests are counted in /metrics),
and a graceful shutdown that lets in-flight requests finish and flushes the prediction
log. Settings come from the environment (see :mod:`fraudops_serving.settings`);
command-line options are written into the environment first, so every worker process
reads the same configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fraudops_serving.settings import ServingSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)


def setup_logging(level: str = "INFO") -> None:
    """Plain, one-line logs on stderr (what container runtimes collect)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the kernel.

    A batch request allocates its body and a few copies of it (half a megabyte for 1,000
    rows), then frees them. By default glibc serves such blocks with fresh ``mmap``s or
    trims them off the heap when freed, so every request faults in (and the kernel zeroes)
    new pages: 70 page faults a request, measured. Raised thresholds keep those blocks on
    the heap and the heap's top in place: the next request reuses the same pages (0 faults).
    The process's memory then stays at its high-water mark, which the body-size limit and
    the concurrency bound. Returns False where the C library is not glibc (nothing changed).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False  # the operator tuned the allocator: theirs wins
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1)
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1) and ok


def build_app() -> FastAPI:
    """The app factory uvicorn calls in each worker."""
    from fraudops_serving.app import create_app

    setup_logging(os.environ.get("FRAUDOPS_SERVING_LOG_LEVEL", "INFO"))
    if not keep_freed_memory():
        log.info("allocator left as it is (not glibc, or MALLOC_*_THRESHOLD_ set)")
    return create_app(ServingSettings())


def _uvicorn_config(settings: ServingSettings, log_level: str, **extra: Any) -> dict[str, Any]:
    fast = importlib.util.find_spec("uvloop") is not None and importlib.util.find_spec("httptools") is not None
    return {
        "app": "fraudops_serving.server:build_app",
        "factory": True,
        "loop": "uvloop" if fast else "auto",
        "http": "httptools" if fast else "auto",
        "access_log": False,
        "log_level": log_level,
        "timeout_graceful_shutdown": int(settings.graceful_timeout_s),
        "server_header": False,
        **extra,
    }


def run(settings: ServingSettings | None = None, *, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM (blocking): one process, or ``settings.workers`` of them.

    Several workers each bind their own listening socket to the port with ``SO_REUSEPORT``
    (Linux, the BSDs), so that the kernel spreads new connections over them. uvicorn's own
    workers share one socket instead, and whichever worker wakes first accepts every
    connection waiting: a client that opens its keep-alive connections together (a batch
    job, a load balancer's pool) lands on one worker while the others idle. Where the
    platform has no ``SO_REUSEPORT``, uvicorn's workers are used.
    """
    import uvicorn

    settings = settings or ServingSettings()
    if settings.workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        Supervisor(settings, log_level).run()
        return
    uvicorn.run(
        **_uvicorn_config(settings, log_level, host=settings.host, port=settings.port, workers=settings.workers)
    )


def worker_defaults(settings: ServingSettings, cores: int | None = None) -> dict[str, str]:
    """Environment defaults of each worker process when there are several (an operator's value wins).

    A worker per core is the unit of parallelism then, not a thread: every batch is scored
    on the worker's event loop (no hand-off to a thread and back, no contention for the
    interpreter lock between them) and the model's batch session gets the worker's share
    of the cores.
    """
    cores = cores or os.cpu_count() or 1
    return {
        "FRAUDOPS_SERVING_INLINE_MAX_ROWS": str(settings.max_batch_rows),
        "FRAUDOPS_SERVING_BATCH_THREADS": str(max(1, cores // settings.workers)),
    }


def reuse_port_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other processes may bind too (``SO_REUSEPORT``).

    The kernel hands new connections only to the sockets of the group that listen: a
    worker's socket is bound first and listens once the worker can serve.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _worker(index: int, log_level: str) -> None:
    """One worker process: its own socket on the shared port, one uvicorn server on it."""
    import uvicorn

    setup_logging(os.environ.get("FRAUDOPS_SERVING_LOG_LEVEL", "INFO"))
    settings = ServingSettings()
    # Bound now, listening only after the app's start-up (uvicorn listens on the sockets it is
    # given once the lifespan has started, which waits for the first model): until then the
    # kernel sends new connections to the workers that serve.
    sock = reuse_port_socket(settings.host, settings.port, listen=False)
    log.info("worker %d (pid %d) on %s:%d", index, os.getpid(), settings.host, settings.port)
    uvicorn.Server(uvicorn.Config(**_uvicorn_config(settings, log_level))).run(sockets=[sock])


class Supervisor:
    """Starts ``workers`` processes, forwards SIGTERM/SIGINT to them, replaces one that dies.

    A graceful stop waits for every worker's own graceful shutdown (in-flight requests
    answered, the prediction log flushed), up to ``graceful_timeout_s`` and ten seconds
    more, then kills what is left. A worker that exits on its own is logged and started
    again, at most once a second.
    """

    def __init__(self, settings: ServingSettings, log_level: str) -> None:
        self.settings = settings
        self.log_level = log_level
        self.stopping = threading.Event()
        self.processes: list[multiprocessing.process.BaseProcess | None] = [None] * settings.workers
        self._context = multiprocessing.get_context("spawn")

    def _start(self, index: int) -> None:
        proc = self._context.Process(target=_worker, args=(index, self.log_level), name=f"fraudops-serve-{index}")
        proc.start()
        self.processes[index] = proc

    def _signal(self, signum: int, _frame: object) -> None:
        if not self.stopping.is_set():
            log.info("supervisor: %s, stopping %d workers", signal.Signals(signum).name, len(self.processes))
        self.stopping.set()

    def run(self) -> None:
        # The port is checked here, once, so that a taken port is one clear error, not N dying workers.
        try:
            reuse_port_socket(self.settings.host, self.settings.port).close()
        except OSError as exc:
            where = f"{self.settings.host}:{self.settings.port}"
            raise SystemExit(f"fraudops-serve: cannot listen on {where}: {exc}") from None
        for var, value in worker_defaults(self.settings).items():
            os.environ.setdefault(var, value)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._signal)
        log.info("supervisor (pid %d): %d workers on port %d", os.getpid(), len(self.processes), self.settings.port)
        for i in range(len(self.processes)):
            self._start(i)
        last_restart = 0.0
        while not self.stopping.wait(0.5):
            for i, proc in enumerate(self.processes):
                if proc is not None and not proc.is_alive() and not self.stopping.is_set():
                    log.error(
                        "supervisor: worker %d (pid %s) exited with %s; starting it again", i, proc.pid, proc.exitcode
                    )
                    time.sleep(max(0.0, last_restart + 1.0 - time.monotonic()))
                    last_restart = time.monotonic()
                    self._start(i)
        self._stop_all()

    def _stop_all(self) -> None:
        alive = [p for p in self.processes if p is not None and p.is_alive()]
        for proc in alive:
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.graceful_timeout_s + 10.0
        for proc in alive:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("supervisor: worker pid %s did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join(5.0)
        log.info("supervisor: all workers stopped")


def main(argv: Sequence[str] | None = None) -> None:
    """``fraudops-serve [--host H] [--port P] [--workers N] [--bundle-dir DIR] [--challenger-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="fraudops-serve", description="Run the fraudops predictor.")
    parser.add_argument("--host", help="interface (FRAUDOPS_SERVING_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (FRAUDOPS_SERVING_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="processes (FRAUDOPS_SERVING_WORKERS, default 1)")
    parser.add_argument("--bundle-dir", help="serve this champion bundle directory instead of the registry")
    parser.add_argument("--challenger-dir", help="challenger bundle directory (with --bundle-dir)")
    parser.add_argument("--log-level", default=os.environ.get("FRAUDOPS_SERVING_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    for option, var in (
        ("host", "FRAUDOPS_SERVING_HOST"),
        ("port", "FRAUDOPS_SERVING_PORT"),
        ("workers", "FRAUDOPS_SERVING_WORKERS"),
        ("bundle_dir", "FRAUDOPS_SERVING_BUNDLE_DIR"),
        ("challenger_dir", "FRAUDOPS_SERVING_CHALLENGER_DIR"),
    ):
        value = getattr(args, option)
        if value is not None:
            os.environ[var] = str(value)
    os.environ["FRAUDOPS_SERVING_LOG_LEVEL"] = args.log_level
    setup_logging(args.log_level)
    try:
        settings = ServingSettings()
    except ValueError as exc:
        raise SystemExit(f"fraudops-serve: invalid configuration: {exc}") from None
    run(settings, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
