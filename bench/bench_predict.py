"""Benchmark of the predictor, side by side with its baselines, in one run.

    .venv/bin/python bench/bench_predict.py            # everything (~5 minutes)
    .venv/bin/python bench/bench_predict.py --quick    # shorter phases
    .venv/bin/python bench/bench_predict.py --bundle $FRAUDOPS_HOME/bundles/fraud-detector/3

In the HTTP section every server runs the same model (a bundle of the production architecture
built here, or ``--bundle``) in its own process with one uvicorn worker (uvloop + httptools, no access
log), on loopback, pinned to the last core; the load generator is this process, pinned to
the other cores (the header line says where each runs; a server that would share the
generator's core is an error): a raw asyncio HTTP/1.1 keep-alive client for the closed loop,
a busy-polling one for the open loop. Targets:

* ``ceiling``: a bare endpoint on the same stack (a FastAPI app, the endpoint routed as
  the predictor's scoring routes are: a plain Starlette route taking the raw request)
  that parses the same body with orjson and returns a constant;
* ``plain``: a FastAPI app written the obvious way: a pydantic model with
  ``features: list[float]``, a sync handler, one default ``InferenceSession.run`` per request;
* ``predictor``: ``fraudops-serve`` on a bundle directory, prediction log (flushed every second)
  and metrics on; and the same predictor with its log off (what the log costs);
* ``mlflow``: ``mlflow models serve`` of the same ONNX graph (``--no-mlflow`` skips it).

Per target: peak throughput (closed loop, 16 connections) with p50/p99, then p50/p99 in an
open loop at half of that peak (latency counted from the scheduled send time, so queueing
shows). Then rows per second of ``/predict/batch`` (JSON and Arrow) against raw
``InferenceSession.run`` on the same rows, all on every core (the predictor with one worker
process per core, 16 connections), and the cost of fetching online card features
from a local ``redis-server``. Run it with ``--serve NAME`` to start one server alone.

The predictors write their prediction logs under the run's temporary directory, as they do
in production (the measured phases pay for every flush), and a thread of this process
deletes each finished file as soon as it appears: at batch speed the log grows by about a
quarter of a gigabyte a second, which a whole run would otherwise keep until its end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CONNECTIONS = 16
BATCH_CONNECTIONS = 16
# A gap between two turns of the open loop longer than this is a pause of the generator.
STALL_S = 0.0005


# --------------------------------------------------------------------------- servers


def _model_and_names(bundle: str) -> tuple[bytes, list[str], float]:
    manifest = orjson.loads((Path(bundle) / "manifest.json").read_bytes())
    return (Path(bundle) / "model.onnx").read_bytes(), manifest["feature_names"], float(manifest["threshold"])


def ceiling_app(bundle: str) -> Any:
    """Same stack, same body parsing, no model: the most any endpoint here can do."""
    from fastapi import FastAPI

    app = FastAPI()
    answer = orjson.dumps(
        {
            "request_id": "0" * 32,
            "probability": 0.5,
            "decision": 0,
            "threshold": 0.5,
            "model_name": "m",
            "model_version": "1",
            "variant": "champion",
            "feature_source": "request",
        }
    )

    async def predict(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(answer, media_type="application/json")

    # Routed as the predictor routes /predict: a plain Starlette route in the FastAPI app.
    app.router.routes.append(Route("/predict", predict, methods=["POST"]))
    return app


class PredictRequest(BaseModel):
    features: list[float]


class PredictResponse(BaseModel):
    probability: float
    decision: int


def plain_app(bundle: str) -> Any:
    """The obvious FastAPI app: pydantic list[float], sync handler, default session, one run per request."""
    import onnxruntime as ort
    from fastapi import FastAPI

    model, _names, threshold = _model_and_names(bundle)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.post("/predict", response_model=PredictResponse)
    def predict(req: PredictRequest) -> PredictResponse:
        x = np.array([req.features], dtype=np.float32)
        p = float(session.run(None, {"features": x})[0][0])
        return PredictResponse(probability=p, decision=int(p >= threshold))

    return app


def _serve(name: str, port: int, bundle: str) -> None:
    import uvicorn

    app = {"ceiling": ceiling_app, "plain": plain_app}[name](bundle)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, timeout: float = 120.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f} s")


# The cores this process may use, read once at import: after _pin_generator() narrows this
# process to the generator's cores, the servers' core must still be found among all of them
# (read afresh, the set would hold the generator's core alone, and every server would inherit
# it and share that core with the busy-polling generator).
_CPUS: tuple[int, ...] = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()


def _server_cpus() -> set[int] | None:
    """Servers on the last core, the load generator on the others (when there are two or more)."""
    return {_CPUS[-1]} if len(_CPUS) >= 2 else None


def _all_cpus() -> set[int]:
    return set(_CPUS) or set(range(os.cpu_count() or 1))


def _placement() -> str:
    servers = _server_cpus()
    if not servers:
        return "one core: servers and load generator share it"
    return f"servers on core {sorted(servers)}, load generator on {sorted(set(_CPUS) - servers)}"


def _pin_generator() -> None:
    cpus = _server_cpus()
    if cpus:
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - cpus)


SERVER_PIDS: dict[int, int] = {}  # port -> pid, for CPU accounting


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (mlflow runs uvicorn as a child)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@contextlib.contextmanager
def server(
    cmd: list[str], port: int, ready_path: str, env: dict[str, str] | None = None, *, pin: bool = True
) -> Iterator[None]:
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    cpus = _server_cpus() if pin else None
    if cpus:  # before it starts workers: mlflow's uvicorn child inherits the affinity
        os.sched_setaffinity(proc.pid, cpus)
        if cpus & os.sched_getaffinity(0):  # the generator would take the servers' core
            proc.kill()
            raise RuntimeError(f"server pinned to {sorted(cpus)} shares a core with the load generator")
    SERVER_PIDS[port] = proc.pid
    try:
        try:
            wait_http(port, ready_path, proc=proc)
        except RuntimeError:
            print(Path(log.name).read_text()[-3000:], file=sys.stderr)
            raise
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


class LogPruner:
    """Deletes the finished prediction-log files under ``root`` while the benchmark runs.

    Only files under their final names (``part-*.parquet``) go: a flush writes hidden files
    and renames them when complete, so a file being written is never touched. What the
    predictors wrote is counted, so the output can say how much passed through the disk.
    """

    def __init__(self, root: Path, every_s: float = 0.5) -> None:
        self.root = root
        self.every_s = every_s
        self.files = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-pruner", daemon=True)

    def __enter__(self) -> LogPruner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.prune()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.prune()

    def prune(self) -> None:
        for path in self.root.glob("**/prediction_log/date=*/part-*.parquet"):
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                self.files += 1
                self.bytes += size


# --------------------------------------------------------------------------- load generator


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        pos = head.find(b"content-length:")
        length = (
            int(head[pos + 15 : head.find(b"\r\n", pos) if head.find(b"\r\n", pos) > 0 else None]) if pos >= 0 else 0
        )
        if len(self.buf) < end + 4 + length:
            return
        status = int(self.buf[9:12])
        del self.buf[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def http_request(port: int, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connect(port: int, n: int) -> list[_Conn]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(n):
        _, proto = await loop.create_connection(_Conn, "127.0.0.1", port)
        conns.append(proto)
    return conns


async def closed_loop(
    port: int, raw: bytes, seconds: float, max_requests: int, conns: int = CONNECTIONS
) -> dict[str, Any]:
    """Peak: ``conns`` connections, each sending its next request as soon as the last is answered."""
    pool = await _connect(port, conns)
    cpu0 = cpu_seconds(SERVER_PIDS[port]) if port in SERVER_PIDS else None
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    budget = [max_requests]

    async def worker(c: _Conn) -> None:
        nonlocal errors
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            t = time.perf_counter()
            status = await c.request(raw)
            lat.append(time.perf_counter() - t)
            errors += status != 200

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    wall = time.perf_counter() - t0
    for c in pool:
        assert c.transport is not None
        c.transport.close()
    out = _summary(lat, wall, errors)
    if cpu0 is not None and lat:
        out["cpu_us"] = (cpu_seconds(SERVER_PIDS[port]) - cpu0) / len(lat) * 1e6
    return out


def open_loop(port: int, raw: bytes, rate: float, seconds: float, conns: int = 64) -> dict[str, Any]:
    """Fixed arrival rate; latency from the scheduled send time (no coordinated omission).

    A busy-polling loop over non-blocking sockets (``epoll`` with a zero timeout) on the
    generator's own core: timers of an event loop fire on millisecond ticks, which would
    send requests in bursts and add up to a millisecond of the generator's lateness to
    every measured latency. A request that finds every connection busy waits for one,
    and that wait counts.

    Connections are taken in turn (the one idle longest first): taken last-in first-out, a
    few stay busy while the rest idle past the server's keep-alive timeout (uvicorn's 5 s),
    and a request sent just as the server closes its connection is never answered (the
    keep-alive race). A connection the server closes is replaced; a request lost with it
    counts as an error. The loop gives up with an error after ``seconds`` plus 30 s.

    The generator's own pauses are counted too (``stalls``: gaps over ``STALL_S`` between two
    turns of the loop, with their total and the longest): while it is off its core, requests
    go out late and answers wait unread, and that lateness is counted in every latency it
    covers, as it must be without coordinated omission. Here it is the machine, not the
    server: another task on the generator's core (a kernel thread, a service).
    """
    import select
    from collections import deque

    ep = select.epoll()
    by_fd: dict[int, socket.socket] = {}
    bufs: dict[int, bytearray] = {}
    free: deque[int] = deque()

    def connect() -> None:
        sk = socket.create_connection(("127.0.0.1", port))
        sk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sk.setblocking(False)
        fd = sk.fileno()
        by_fd[fd], bufs[fd] = sk, bytearray()
        ep.register(fd, select.EPOLLIN)
        free.append(fd)

    def drop(fd: int) -> None:
        ep.unregister(fd)
        by_fd.pop(fd).close()
        del bufs[fd]
        connect()

    for _ in range(conns):
        connect()
    started: dict[int, float] = {}  # fd -> scheduled time of its request in flight
    n = int(rate * seconds)
    lat: list[float] = []
    errors = lost = 0
    sent = 0
    t0 = time.perf_counter() + 0.01
    give_up = t0 + seconds + 30.0
    stalls: list[float] = []
    prev = time.perf_counter()
    while len(lat) + lost < n:
        now = time.perf_counter()
        if now - prev > STALL_S:
            stalls.append(now - prev)
        prev = now
        if now > give_up:
            raise RuntimeError(f"open loop on port {port}: {n - len(lat) - lost} of {n} requests unanswered")
        while sent < n and free and t0 + sent / rate <= now:
            fd = free.popleft()
            try:
                by_fd[fd].send(raw)
            except OSError:  # closed by the server while idle: the same request on a new one
                drop(fd)
                continue
            started[fd] = t0 + sent / rate
            sent += 1
        for fd, _ in ep.poll(0):
            if fd not in by_fd:  # replaced earlier in this poll
                continue
            try:
                data = by_fd[fd].recv(65536)
            except OSError:
                data = b""
            if not data:  # closed by the server
                if started.pop(fd, None) is not None:
                    lost += 1
                else:
                    free.remove(fd)
                drop(fd)
                continue
            buf = bufs[fd]
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = bytes(buf[:end]).lower()
            pos = head.find(b"content-length:")
            length = int(head[pos + 15 :].split(b"\r\n", 1)[0]) if pos >= 0 else 0
            if len(buf) < end + 4 + length:
                continue
            errors += int(buf[9:12]) != 200
            del buf[: end + 4 + length]
            lat.append(time.perf_counter() - started.pop(fd))
            free.append(fd)
    wall = time.perf_counter() - t0
    ep.close()
    for sk in by_fd.values():
        sk.close()
    return {
        **_summary(lat, wall, errors + lost),
        "stalls": len(stalls),
        "stall_ms": sum(stalls) * 1000.0,
        "stall_max_ms": max(stalls, default=0.0) * 1000.0,
    }


def _summary(lat: list[float], wall: float, errors: int) -> dict[str, Any]:
    arr = np.array(lat) * 1000.0
    return {
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / wall if wall else 0.0,
        "p50_ms": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99_ms": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
    }


def measure(port: int, raw: bytes, seconds: float, warmup: float = 1.0) -> dict[str, Any]:
    asyncio.run(closed_loop(port, raw, warmup, 1_000_000))
    peak = asyncio.run(closed_loop(port, raw, seconds, 2_000_000))
    half = open_loop(port, raw, peak["rps"] / 2, seconds)
    return {"peak": peak, "half": half}


# --------------------------------------------------------------------------- parts


def make_bundle(workdir: Path) -> str:
    from fraudops import schema
    from fraudops_serving.devtools import write_bundle

    return str(write_bundle(workdir / "bundle", schema.FEATURE_NAMES, version="1", threshold=0.5))


def mlflow_model(bundle: str, workdir: Path) -> str:
    import mlflow.onnx
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    model, names, _ = _model_and_names(bundle)
    path = workdir / "mlflow-model"
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(names)), "features")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "probability")]),
    )
    mlflow.onnx.save_model(onnx.load_from_string(model), str(path), signature=signature)
    return str(path)


def predictor_env(bundle: str, workdir: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "FRAUDOPS_HOME": str(workdir / "home"),
        "FRAUDOPS_SERVING_BUNDLE_DIR": bundle,
        "FRAUDOPS_SERVING_PORT": str(port),
        "FRAUDOPS_SERVING_HOST": "127.0.0.1",
        "FRAUDOPS_SERVING_LOG_LEVEL": "warning",
        "FRAUDOPS_SERVING_POLL_INTERVAL_S": "3600",
        # The prediction log is flushed every second (default: 5 s or 20,000 rows), so that every
        # measured phase, however short, pays for the flushes of the rows it logs.
        "FRAUDOPS_SERVING_LOG_FLUSH_INTERVAL_S": "1",
        **extra,
    }


def bodies(names: list[str], seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    values = [round(float(v), 4) for v in rng.normal(0, 1, len(names))]
    return {
        "list": orjson.dumps({"features": values}),
        "named": orjson.dumps({"features": dict(zip(names, values, strict=True)), "card_id": 42}),
        "mlflow": orjson.dumps({"inputs": [values]}),
    }


def fmt(label: str, r: dict[str, Any]) -> str:
    p, h = r["peak"], r["half"]
    cpu = p.get("cpu_us", float("nan"))
    return (
        f"| {label:<30} | {p['rps']:>8,.0f} | {p['p50_ms']:>6.2f} | {p['p99_ms']:>6.2f} | {cpu:>8.0f} "
        f"| {1e6 / cpu:>8,.0f} | {h['rps']:>8,.0f} | {h['p50_ms']:>6.2f} | {h['p99_ms']:>6.2f} "
        f"| {p['errors'] + h['errors']:>4} |"
    )


HEADER = (
    "| target                         | peak rps | p50 ms | p99 ms | CPU us/r | rps/core | half rps | p50 ms "
    "| p99 ms | errs |\n"
    "|--------------------------------|----------|--------|--------|----------|----------|----------|--------"
    "|--------|------|"
)


def round_ratio(res: dict[str, Any], num: str, den: str, key: str = "rps") -> tuple[float, float, float]:
    """Median, lowest and highest of ``num / den`` over the rounds (each round measures both
    minutes apart at most, so the machine's slow and fast spells cancel out)."""
    ratios = sorted(
        a.get(key, float("nan")) / b.get(key, float("nan"))
        for a, b in zip(res[num]["rounds"], res[den]["rounds"], strict=True)
    )
    return ratios[len(ratios) // 2], ratios[0], ratios[-1]


NO_LOG = "predictor, log off (array)"


def ratio_lines(res: dict[str, Any]) -> list[str]:
    """The targets' ratios, by measured throughput and by server CPU per request (the median
    of the ratios of each round, with their range)."""
    pred, plain, ceil = "predictor (array body)", "plain FastAPI (array body)", "ceiling (array body)"

    def both(num: str, den: str, fmt: str) -> str:
        t, lo, hi = round_ratio(res, num, den)
        c = round_ratio(res, den, num, "cpu_us")[0]  # CPU per request: less is better
        x = "" if fmt.endswith("%") else "x"
        return f"{t:{fmt}}{x} throughput (rounds {lo:{fmt}}{x}-{hi:{fmt}}{x}), {c:{fmt}}{x} by CPU per request"

    lines = [
        f"predictor / plain FastAPI (array body):   {both(pred, plain, '.2f')}  (target >= 2x)",
        f"predictor / bare ceiling (array body):    {both(pred, ceil, '.0%')}  (target >= 70 %)",
        "predictor / bare ceiling (by-name body):  "
        + both("predictor (by-name body)", "ceiling (by-name body)", ".0%"),
    ]
    if "mlflow models serve" in res:
        lines.append(f"predictor / mlflow models serve:          {both(pred, 'mlflow models serve', '.1f')}")
    lines.append(f"predictor p99 at half of its peak load:   {res[pred]['half']['p99_ms']:.2f} ms  (target < 5 ms)")
    lines.append(
        f"  the load generator's own pauses over {STALL_S * 1000:.1f} ms in that phase: {_stalls(res[pred]['half'])}"
    )
    if NO_LOG in res:
        t, lo, hi = round_ratio(res, pred, NO_LOG)
        with_log, without = res[pred]["half"]["p99_ms"], res[NO_LOG]["half"]["p99_ms"]
        lines.append(
            f"the prediction log's cost: with it, {t:.0%} of the throughput without it (rounds {lo:.0%}-{hi:.0%}); "
            f"p99 at half load {with_log:.2f} ms with it, {without:.2f} without (the generator paused "
            f"{res[pred]['half']['stall_ms']:.1f} and {res[NO_LOG]['half']['stall_ms']:.1f} ms in those phases)"
        )
    return lines


def _stalls(half: dict[str, Any]) -> str:
    """The generator's pauses in an open-loop phase, as :func:`open_loop` counted them."""
    return (
        f"{half['stalls']}, {half['stall_ms']:.1f} ms in all, the longest {half['stall_max_ms']:.2f} ms "
        f"(counted in the latency of every request they delayed)"
    )


def interleaved(targets: dict[str, tuple[int, bytes]], seconds: float, rounds: int) -> dict[str, Any]:
    """Measure every target in turn, ``rounds`` times; keep the median round of each.

    Other processes on a small shared machine come and go: interleaving gives each
    target the same conditions on average, and the median drops a disturbed round.
    """
    for port, raw in targets.values():  # warm-up
        asyncio.run(closed_loop(port, raw, 1.0, 1_000_000))
    peaks: dict[str, list[dict[str, Any]]] = {k: [] for k in targets}
    for _ in range(rounds):
        for label, (port, raw) in targets.items():
            peaks[label].append(asyncio.run(closed_loop(port, raw, seconds, 2_000_000)))
    out: dict[str, Any] = {}
    for label, rs in peaks.items():
        by_rps = sorted(rs, key=lambda r: r["rps"])
        # Per round, in order: ratios are taken between targets measured minutes apart at most.
        out[label] = {"peak": {**by_rps[len(rs) // 2], "errors": sum(r["errors"] for r in rs)}, "rounds": rs}
    halves: dict[str, list[dict[str, Any]]] = {k: [] for k in targets}
    for _ in range(max(1, rounds // 2) | 1):  # an odd count: the median is a measured round
        for label, (port, raw) in targets.items():
            halves[label].append(open_loop(port, raw, out[label]["peak"]["rps"] / 2, seconds))
    for label, rs in halves.items():
        rs.sort(key=lambda r: r["p99_ms"])
        out[label]["half"] = {**rs[len(rs) // 2], "errors": sum(r["errors"] for r in rs)}
    return out


def http_section(bundle: str, workdir: Path, seconds: float, rounds: int, with_mlflow: bool) -> dict[str, Any]:
    _, names, _ = _model_and_names(bundle)
    b = bodies(names)
    me = str(Path(__file__).resolve())
    ports = {name: free_port() for name in ("ceiling", "plain", "predictor", "predictor-nolog", "mlflow")}
    with contextlib.ExitStack() as stack:
        for name in ("ceiling", "plain"):
            cmd = [PY, me, "--serve", name, "--port", str(ports[name]), "--bundle", bundle]
            stack.enter_context(server(cmd, ports[name], "/docs"))
        p = ports["predictor"]
        stack.enter_context(server([PY, "-m", "fraudops_serving"], p, "/ready", predictor_env(bundle, workdir, p)))
        # The same predictor without its prediction log: what the log costs at peak and in the tail.
        nl = ports["predictor-nolog"]
        env = predictor_env(bundle, workdir / "nolog", nl, FRAUDOPS_SERVING_LOG_ENABLED="false")
        stack.enter_context(server([PY, "-m", "fraudops_serving"], nl, "/ready", env))
        targets = {
            "ceiling (array body)": (ports["ceiling"], http_request(ports["ceiling"], "/predict", b["list"])),
            "plain FastAPI (array body)": (ports["plain"], http_request(ports["plain"], "/predict", b["list"])),
            "predictor (array body)": (p, http_request(p, "/predict", b["list"])),
            NO_LOG: (nl, http_request(nl, "/predict", b["list"])),
            "ceiling (by-name body)": (ports["ceiling"], http_request(ports["ceiling"], "/predict", b["named"])),
            "predictor (by-name body)": (p, http_request(p, "/predict", b["named"])),
        }
        if with_mlflow:
            mpath = mlflow_model(bundle, workdir)
            q = ports["mlflow"]
            cmd = [
                str(Path(PY).with_name("mlflow")),
                "models",
                "serve",
                "-m",
                mpath,
                "-p",
                str(q),
                "-h",
                "127.0.0.1",
                "-w",
                "1",
                "--env-manager",
                "local",
            ]
            try:
                # mlflow starts `uvicorn` from PATH: the one next to this interpreter.
                path_env = {"PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
                stack.enter_context(server(cmd, q, "/ping", path_env))
                targets["mlflow models serve"] = (q, http_request(q, "/invocations", b["mlflow"]))
            except RuntimeError as exc:
                print(f"mlflow models serve could not be measured: {exc}", file=sys.stderr)
        return interleaved(targets, seconds, rounds)


RAW_DEFAULT = "raw InferenceSession.run, default options"
RAW_ONE = "raw InferenceSession.run, 1 thread"
ARROW = "/predict/batch, Arrow in and out"
ARROW_NO_LOG = "/predict/batch, Arrow, prediction log off"
JSON_BATCH = "/predict/batch, JSON in and out"


def batch_section(
    bundle: str, workdir: Path, seconds: float, rows: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """Rows per second and CPU microseconds per row, raw ONNX Runtime vs /predict/batch (JSON, Arrow).

    Everything here runs on every core, as deployed: raw ``InferenceSession.run`` with
    ONNX Runtime's default options in this process, and the predictor as one deploys it on
    a machine of its own, one worker process per core (``--workers``; the prediction log
    on; a second one with the log off). The load generator only sends prepared bodies,
    over 16 connections (the kernel spreads them over the workers' sockets by their
    addresses: with 16, each worker gets enough to stay busy), so it takes little of the
    machine. Raw ONNX Runtime and the predictors are measured in turn,
    ``rounds`` times: each ratio is taken within a round. The CPU figures (all threads of
    the server process, per row) show where the time goes.
    """
    os.sched_setaffinity(0, _all_cpus())  # the HTTP section pins the generator; batch runs unpinned
    try:
        return _batch(bundle, workdir, seconds, rows, rounds)
    finally:
        _pin_generator()  # the sections after this one pin their servers again


def _batch(bundle: str, workdir: Path, seconds: float, rows: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    import onnxruntime as ort
    import pyarrow as pa

    model, names, _ = _model_and_names(bundle)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (rows, len(names))).astype(np.float32)
    sessions = {}
    for label, threads in ((RAW_DEFAULT, 0), (RAW_ONE, 1)):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sessions[label] = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        for _ in range(5):
            sessions[label].run(None, {"features": x})

    def raw_run(sess: Any) -> tuple[float, float]:
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            sess.run(None, {"features": x})
            n += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return n * rows / wall, cpu / (n * rows) * 1e6

    json_body = orjson.dumps({"transactions": [{"features": r} for r in x.astype(float).round(5).tolist()]})
    sink = pa.BufferOutputStream()
    table = pa.table({n: x[:, j] for j, n in enumerate(names)})
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    arrow_body = sink.getvalue().to_pybytes()
    ports = {True: free_port(), False: free_port()}  # prediction log on, off

    def request(logged: bool, body: bytes, ctype: str) -> bytes:
        raw = http_request(ports[logged], "/predict/batch", body, ctype)
        if "arrow" in ctype:  # ask for an Arrow answer too
            raw = raw.replace(b"\r\n\r\n", b"\r\nAccept: application/vnd.apache.arrow.stream\r\n\r\n", 1)
        return raw

    arrow = "application/vnd.apache.arrow.stream"
    cases = {
        ARROW: (True, request(True, arrow_body, arrow)),
        # What the prediction log (a Parquet row per scored row) costs in that number:
        ARROW_NO_LOG: (False, request(False, arrow_body, arrow)),
        JSON_BATCH: (True, request(True, json_body, "application/json")),
    }
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in (RAW_DEFAULT, RAW_ONE, *cases)}
    with contextlib.ExitStack() as stack:
        for logged, port in ports.items():
            env = predictor_env(
                bundle,
                workdir / f"log-{logged}",
                port,
                FRAUDOPS_SERVING_MAX_BATCH_ROWS=str(rows),
                FRAUDOPS_SERVING_WORKERS=str(len(_all_cpus())),
                FRAUDOPS_SERVING_MAX_BODY_BYTES=str(max(8 << 20, 2 * len(json_body))),
                **({} if logged else {"FRAUDOPS_SERVING_LOG_ENABLED": "false"}),
            )
            stack.enter_context(server([PY, "-m", "fraudops_serving"], port, "/ready", env, pin=False))
        for logged, raw in cases.values():  # warm-up
            asyncio.run(closed_loop(ports[logged], raw, 1.0, 1000, conns=BATCH_CONNECTIONS))
        for _ in range(rounds):
            for label, sess in sessions.items():
                out[label].append(raw_run(sess))
            for label, (logged, raw) in cases.items():
                r = asyncio.run(closed_loop(ports[logged], raw, seconds, 100_000, conns=BATCH_CONNECTIONS))
                if r["errors"]:
                    raise RuntimeError(f"{label}: {r['errors']} failed requests")
                out[label].append((r["rps"] * rows, r.get("cpu_us", float("nan")) / rows))
    return out


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def batch_lines(b: dict[str, list[tuple[float, float]]], rows: int) -> list[str]:
    """The batch table (medians of the rounds) and its ratios (medians of each round's ratio)."""
    lines = [f"batch scoring, {rows:,} rows per call: rows/s, CPU us per row (server process), median of rounds"]
    for label, rs in b.items():
        lines.append(
            f"  {label:<45} {_median([r for r, _ in rs]):>10,.0f} rows/s {_median([c for _, c in rs]):>8.2f} us/row"
        )

    def ratio(num: str, den: str) -> tuple[float, float, float]:
        rs = sorted(a[0] / d[0] for a, d in zip(b[num], b[den], strict=True))
        return rs[len(rs) // 2], rs[0], rs[-1]

    t, lo, hi = ratio(ARROW, RAW_DEFAULT)
    lines.append(
        f"  Arrow batch / raw InferenceSession.run (default options): {t:.0%} of its rows/s "
        f"(rounds {lo:.0%}-{hi:.0%})  (target >= 50 %)"
    )
    t, lo, hi = ratio(ARROW_NO_LOG, RAW_DEFAULT)
    lines.append(f"  the same with the prediction log off: {t:.0%} (rounds {lo:.0%}-{hi:.0%})")
    cpu = {k: _median([c for _, c in rs]) for k, rs in b.items()}
    lines.append(
        f"  server CPU per row: {cpu[ARROW]:.2f} us (the model alone: {cpu[RAW_ONE]:.2f} us with one thread); "
        f"{cpu[ARROW_NO_LOG]:.2f} us with the prediction log off"
    )
    lines.append(f"  JSON batch / raw (default options): {ratio(JSON_BATCH, RAW_DEFAULT)[0]:.0%} of its rows/s")
    return lines


def online_section(bundle: str, workdir: Path, seconds: float) -> dict[str, Any] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        print("redis-server not found: online-feature cost not measured", file=sys.stderr)
        return None
    import redis

    from fraudops import schema
    from fraudops_serving.online import feast_field, feast_key

    _, names, _ = _model_and_names(bundle)
    rport = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=rport)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        # One card in Feast's layout: float_val protobufs under murmur3 field names.
        import struct

        mapping = {feast_field("card_profile", n): b"\x35" + struct.pack("<f", 1.5) for n in schema.CARD_FEATURE_NAMES}
        client.hset(feast_key("card_id", 42, "fraudops"), mapping=mapping)  # type: ignore[arg-type]
        rng = np.random.default_rng(2)
        values = {n: round(float(v), 4) for n, v in zip(names, rng.normal(0, 1, len(names)), strict=True)}
        without = {n: v for n, v in values.items() if n not in schema.CARD_FEATURE_NAMES}
        port = free_port()
        env = predictor_env(
            bundle,
            workdir,
            port,
            FRAUDOPS_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
            FRAUDOPS_SERVING_ONLINE_FEATURES=",".join(schema.CARD_FEATURE_NAMES),
        )
        res = {}
        with server([PY, "-m", "fraudops_serving"], port, "/ready", env):
            res["card features in the request"] = measure(
                port, http_request(port, "/predict", orjson.dumps({"features": values, "card_id": 42})), seconds
            )
            res["card features from Redis"] = measure(
                port, http_request(port, "/predict", orjson.dumps({"features": without, "card_id": 42})), seconds
            )
        return res
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def gpu_section(bundle: str, rows: int, seconds: float) -> dict[str, float] | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    from fraudops_serving.bundle import SessionConfig, load_bundle

    x = np.random.default_rng(3).normal(0, 1, (rows, 128)).astype(np.float32)
    model = load_bundle(bundle, sessions=SessionConfig(device="cuda"))
    out = {}
    for label, m in (("CUDA", model), ("CPU", load_bundle(bundle))):
        m.predict(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            m.predict(x)
            n += 1
        out[f"{label} batch of {rows:,} rows/s"] = n * rows / (time.perf_counter() - t0)
    out["providers"] = model.providers  # type: ignore[assignment]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--serve", choices=["ceiling", "plain"], help="run one baseline server (used by the benchmark itself)"
    )
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--bundle", help="bundle directory (default: one built here, production architecture)")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each measured phase")
    ap.add_argument("--quick", action="store_true", help="2-second phases")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per target (median kept)")
    ap.add_argument("--batch-rows", type=int, default=1000)
    ap.add_argument("--no-mlflow", action="store_true", help="skip `mlflow models serve`")
    ap.add_argument("--only", choices=["http", "batch", "online", "gpu"], help="run one section")
    args = ap.parse_args()
    if args.serve:
        assert args.bundle
        _serve(args.serve, args.port, args.bundle)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    _pin_generator()
    # The load generator's own garbage collections would show up as server latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    seconds = 1.5 if args.quick else args.seconds
    if args.quick:
        args.rounds = 3
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp, LogPruner(Path(tmp)) as pruner:
        workdir = Path(tmp)
        bundle = args.bundle or make_bundle(workdir)
        print(
            f"model: {bundle}; {os.cpu_count()} cores; {seconds:.0f} s phases; "
            f"load generator: {CONNECTIONS} connections; {_placement()}"
        )
        if args.only in (None, "http"):
            res = http_section(bundle, workdir, seconds, args.rounds, with_mlflow=not args.no_mlflow)
            print("\n/predict, one transaction per request (median of interleaved rounds)")
            print(HEADER)
            for label, r in res.items():
                print(fmt(label, r))
            print()
            for line in ratio_lines(res):
                print(line)
        if args.only in (None, "batch"):
            b = batch_section(bundle, workdir, seconds, args.batch_rows, args.rounds)
            print()
            for line in batch_lines(b, args.batch_rows):
                print(line)
        if args.only in (None, "online"):
            o = online_section(bundle, workdir, seconds)
            if o:
                print("\nonline card features (by-name body, card_id 42)")
                print(HEADER)
                for label, r in o.items():
                    print(fmt(label, r))
                a, c = o["card features in the request"], o["card features from Redis"]
                print(
                    f"  Redis lookup cost: p50 {c['half']['p50_ms'] - a['half']['p50_ms']:+.2f} ms at half load, "
                    f"peak throughput {c['peak']['rps'] / a['peak']['rps']:.0%} of the in-request case"
                )
        if args.only in (None, "gpu"):
            g = gpu_section(bundle, 8192, seconds)
            print(
                "\nGPU: "
                + (
                    "no CUDA provider here"
                    if g is None
                    else ", ".join(f"{k}: {v:,.0f}" if isinstance(v, float) else f"{k}: {v}" for k, v in g.items())
                )
            )
    print(f"\nprediction log: {pruner.files:,} files, {pruner.bytes / 1e9:.1f} GB written, each deleted once complete")


if __name__ == "__main__":
    main()
