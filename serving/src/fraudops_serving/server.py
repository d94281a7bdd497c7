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
import importlib.util
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

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


def run(settings: ServingSettings | None = None, *, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    settings = settings or ServingSettings()
    fast = importlib.util.find_spec("uvloop") is not None and importlib.util.find_spec("httptools") is not None
    uvicorn.run(
        "fraudops_serving.server:build_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop" if fast else "auto",
        http="httptools" if fast else "auto",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        server_header=False,
    )


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
