"""The moving parts of the main job (``fraudops demo``) that are not Airflow's.

* :class:`WebhookReceiver`: a local HTTP server that stands where Slack's incoming
  webhook would be; it records what it receives.
* :class:`PredictorProcess`: the predictor started as its own process (``fraudops
  serve``), exactly as an operator starts it, on a free port, stopped gracefully so
  that its prediction log is flushed.
* :func:`score_table`: sends transactions through ``POST /predict/batch`` (Arrow IPC,
  the bulk format) and counts what came back.

Everything here talks to the real thing over HTTP; none of it is used by the DAGs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fraudops import schema

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
DEMO_MARKER = ".fraudops-demo"


class DemoError(RuntimeError):
    """A step of the demo could not go on; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_home(home: Path, *, fresh: bool) -> None:
    """Start from an empty ``home`` when ``fresh`` (only a home the demo made is wiped).

    A home that holds state the demo did not create (no marker file) is refused rather
    than deleted: the demo never destroys an operator's registry or warehouse.
    """
    import shutil

    home = home.resolve()
    if fresh and home.is_dir() and any(home.iterdir()):
        if not (home / DEMO_MARKER).is_file():
            raise DemoError(
                f"FRAUDOPS_HOME={home} holds state that the demo did not create; point FRAUDOPS_HOME at another "
                "folder (make demo uses .fraudops/demo) or pass --keep to run on top of it"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / DEMO_MARKER).write_text("created by `fraudops demo`; the next fresh demo run deletes this folder\n")


@dataclass
class WebhookReceiver:
    """A local incoming-webhook endpoint (Slack's, or a Pushgateway's): records every POST and PUT.

    Each request is kept as ``{"method", "path", "headers", "raw" (bytes), "body" (the JSON,
    or None)}``. ``statuses`` scripts the answers (then 200); ``delay_s`` answers slowly.
    """

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> WebhookReceiver:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                state.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "raw": raw, "body": body}
                )
                if state.delay_s:
                    time.sleep(state.delay_s)
                status = state.statuses.pop(0) if state.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"error")

            do_POST = _handle  # noqa: N815
            do_PUT = _handle  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/services/T000/B000/secret-token"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def texts(self) -> list[str]:
        """The message text of each received post (Slack's ``text`` field, or the JSON)."""
        out = []
        for r in self.requests:
            body = r["body"]
            out.append(str(body.get("text")) if isinstance(body, dict) and body.get("text") else r["raw"].decode())
        return out


@dataclass
class PredictorProcess:
    """``fraudops serve`` as a child process: started, waited for, stopped gracefully."""

    log_file: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    ready_timeout_s: float = 180.0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PredictorProcess:
        import httpx

        if self.port == 0:
            self.port = free_port()
        exe = Path(sys.executable).with_name("fraudops")
        argv = [str(exe)] if exe.is_file() else [sys.executable, "-m", "fraudops"]
        argv += ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = {**os.environ, "FRAUDOPS_SERVING_ADMIN_API_KEYS": self.admin_key, **self.env}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout_s
        reason = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"the predictor exited with code {self.proc.returncode}; {self._tail()}")
            try:
                r = httpx.get(f"{self.url}/ready", timeout=2.0)
                if r.status_code == 200:
                    return self
                reason = r.text[:300]
            except httpx.HTTPError as exc:
                reason = str(exc)
            time.sleep(0.5)
        self.stop()
        raise DemoError(f"the predictor was not ready within {self.ready_timeout_s:.0f} s ({reason}); {self._tail()}")

    def _tail(self) -> str:
        text = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.is_file() else ""
        return f"log {self.log_file}:\n{text}"

    def served(self) -> dict[str, Any]:
        """``GET /model``: what is served, per variant."""
        import httpx

        result: dict[str, Any] = httpx.get(f"{self.url}/model", timeout=10.0).json()
        return result

    def versions(self) -> dict[str, str]:
        """``{variant: model version}`` of what is served now."""
        info = self.served()
        return {v: str(info[v]["model_version"]) for v in ("champion", "challenger") if info.get(v)}

    def reload(self) -> dict[str, Any]:
        """``POST /admin/reload`` with the admin key: follow the aliases now."""
        import httpx

        r = httpx.post(f"{self.url}/admin/reload", headers={"X-API-Key": self.admin_key}, timeout=120.0)
        if r.status_code not in (200, 409):
            raise DemoError(f"/admin/reload answered {r.status_code}: {r.text[:300]}")
        result: dict[str, Any] = r.json()
        return result

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (the predictor flushes its prediction log), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)
        except ProcessLookupError:
            return self.proc.poll()

    def __enter__(self) -> PredictorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class ScoreStats:
    """What came back from the predictor for a table of transactions."""

    rows: int = 0
    requests: int = 0
    errors: int = 0
    flagged: int = 0
    seconds: float = 0.0
    variants: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "requests": self.requests,
            "errors": self.errors,
            "flagged": self.flagged,
            "seconds": round(self.seconds, 2),
            "rows_per_s": round(self.rows / self.seconds, 1) if self.seconds else None,
            "variants": dict(self.variants),
            "model_versions": dict(self.versions),
        }


def request_rows(table: pa.Table) -> pa.Table:
    """The request columns of a transactions table: ids and the features (no label, no time)."""
    keep = [schema.TRANSACTION_ID, schema.CARD_ID, *schema.FEATURE_NAMES]
    return table.select(keep)


def score_table(url: str, table: pa.Table, *, batch_rows: int = 1_000, api_key: str | None = None) -> ScoreStats:
    """Score every row of ``table`` through ``POST /predict/batch`` in Arrow batches."""
    import httpx
    import pyarrow as pa
    import pyarrow.compute as pc

    body_table = request_rows(table)
    stats = ScoreStats()
    headers = {"Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM}
    if api_key:
        headers["X-API-Key"] = api_key
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for lo in range(0, body_table.num_rows, batch_rows):
            chunk = body_table.slice(lo, batch_rows)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, chunk.schema) as writer:
                writer.write_table(chunk)
            r = client.post("/predict/batch", content=sink.getvalue().to_pybytes(), headers=headers)
            stats.requests += 1
            if r.status_code != 200:
                stats.errors += 1
                log.warning("/predict/batch answered %s: %s", r.status_code, r.text[:300])
                continue
            answer = pa.ipc.open_stream(pa.py_buffer(r.content)).read_all()
            stats.rows += answer.num_rows
            stats.flagged += int(pc.sum(answer.column("decision").cast(pa.int64())).as_py() or 0)
            for name, counter in (("variant", stats.variants), ("model_version", stats.versions)):
                if name in answer.column_names:
                    for item in pc.value_counts(answer.column(name)).to_pylist():
                        counter[str(item["values"])] += int(item["counts"])
    stats.seconds = time.perf_counter() - t0
    return stats


def score_examples(url: str, table: pa.Table, n: int = 3, api_key: str | None = None) -> list[dict[str, Any]]:
    """``POST /predict`` for the first ``n`` rows, one request each: the answers as JSON."""
    import httpx

    rows = request_rows(table).slice(0, n).to_pylist()
    headers = {"X-API-Key": api_key} if api_key else {}
    out = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for row in rows:
            body = {
                "transaction_id": row.pop(schema.TRANSACTION_ID),
                "card_id": row.pop(schema.CARD_ID),
                "features": row,
            }
            r = client.post("/predict", json=body, headers=headers)
            if r.status_code != 200:
                raise DemoError(f"/predict answered {r.status_code}: {r.text[:300]}")
            out.append({"transaction_id": body["transaction_id"], **r.json()})
    return out


def wait_for_log(
    root: Path, day: date, rows: int, *, variants: tuple[str, ...] | None = None, timeout: float = 60
) -> int:
    """Wait until the prediction log holds ``rows`` rows of ``day`` (the predictor flushes in the background)."""
    from datetime import timedelta

    from fraudops.monitoring.predlog import read_prediction_log

    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        table = read_prediction_log(root, start, start + timedelta(days=1), variants=variants, columns=[])
        seen = int(table.num_rows)
        if seen >= rows or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)
