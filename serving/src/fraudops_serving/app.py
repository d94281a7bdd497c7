"""The predictor's HTTP API (FastAPI on uvicorn).

Endpoints: ``POST /predict``, ``POST /predict/batch``, ``GET /health``, ``GET /ready``,
``GET /model``, ``GET /metrics``, ``POST /admin/reload``; the OpenAPI schema at
``/openapi.json`` (docs at ``/docs``) describes each with examples.

Why the scoring handlers take the raw :class:`~starlette.requests.Request`: per-field
model validation of 128 numbers costs more than the model. The body is parsed with
orjson, checked by :mod:`fraudops_serving.inputs`, and single rows are scored on the
event loop through a pre-bound input buffer (tens of microseconds, less than a hop to a
thread); batches larger than ``inline_max_rows`` run in a worker thread so the loop keeps
answering. The OpenAPI schema of those bodies is written out in :mod:`.openapi`.

Traffic split: with a challenger loaded and ``challenger_mode=canary``, a request goes to
the challenger when the hash of its card id (salted) falls below ``canary_share``: the
same card always meets the same variant. Without a card id the request id decides. In
``shadow`` mode the champion answers and the challenger scores the same rows after the
response is sent; its rows are logged with variant ``shadow``.

Online features: see :mod:`.online`. When the store is down, slow or does not know the
card, ``online_fallback=reference_mean`` fills the card features with their training
means from the bundle's reference profile (the response says ``feature_source:
fallback``); ``online_fallback=error`` answers 503 (store down) or 422 (unknown card).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from fraudops_serving import __version__
from fraudops_serving import openapi as docs
from fraudops_serving.arrow import SOURCES, ArrowReader, BatchIds, ids_from_lists
from fraudops_serving.bundle import Model
from fraudops_serving.coalesce import UNSCORABLE, Coalescer
from fraudops_serving.coalesce import describe as describe_coalescer
from fraudops_serving.inputs import InputError, Item, RowParser, may_hold_bools
from fraudops_serving.manager import Served
from fraudops_serving.metrics import Metrics
from fraudops_serving.online import OnlineFeatures, OnlineStoreUnavailable
from fraudops_serving.predlog import Chunk, PredictionLog
from fraudops_serving.security import KeyRing, presented_key
from fraudops_serving.settings import ServingSettings

log = logging.getLogger(__name__)

JSON = "application/json"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
_BUCKETS = 1 << 32
FIRST_LOAD_WAIT_S = 120.0  # the longest a worker of several waits for its first load before it listens
VARIANT_CODES = ("champion", "challenger")  # variant code 0, 1 of a batch's rows


def settle_heap() -> None:
    """Move every object alive now out of the garbage collector's sight (``gc.freeze``).

    What is loaded at start-up (FastAPI, NumPy, ONNX Runtime, PyArrow, the models) lives as
    long as the process; left in the oldest generation, every full collection would scan it
    again, tens of milliseconds that show up as p99. Called at start-up and again when the
    first model (and with it the prediction log) has arrived.
    """
    gc.collect()
    gc.freeze()


class _Ids:
    """Request ids: 128 random bits from the OS as 32 hex digits, drawn 512 at a time (one
    system call and one hex conversion for all of them; a forked child draws its own). They
    must not repeat; they need not be secret."""

    BATCH = 512

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._next = self._stream().__next__

    def _stream(self) -> Iterator[str]:
        while True:
            digits = os.urandom(16 * self.BATCH).hex()
            yield from [digits[i : i + 32] for i in range(0, len(digits), 32)]

    def __call__(self) -> str:
        return self._next()


new_request_id = _Ids()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON)


def _error(status: int, code: str, message: str) -> Response:
    return Response(orjson.dumps({"detail": message, "code": code}), status_code=status, media_type=JSON)


class Runtime:
    """Everything the handlers share: settings, models, parser, log, online store, metrics."""

    def __init__(self, settings: ServingSettings, manager: Any, metrics: Metrics) -> None:
        self.settings = settings
        self.manager = manager
        self.metrics = metrics
        self.scoring_keys = KeyRing(settings.api_keys) if settings.require_api_key else None
        self.admin_keys = KeyRing(settings.admin_api_keys)
        self.executor = ThreadPoolExecutor(max_workers=settings.inference_workers, thread_name_prefix="inference")
        self.parser: RowParser | None = None
        self.arrow: ArrowReader | None = None
        self.predlog: PredictionLog | None = None
        self.online: OnlineFeatures | None = None
        self.share = settings.canary_share
        self.mode = settings.challenger_mode
        self.inline_max_rows = settings.inline_max_rows
        self._salt = settings.canary_salt.encode()
        self._threshold = int(self.share * _BUCKETS)
        self._background: set[asyncio.Future[Any]] = set()
        self._started = False
        self._settled = False  # the heap settled again once the first model is in
        self.coalescer: Coalescer | None = None
        if settings.coalesce_max_rows > 1:
            self.coalescer = Coalescer(
                max_rows=settings.coalesce_max_rows,
                inline=settings.coalesce_max_rows <= settings.inline_max_rows,
                executor=self.executor,
                metrics=metrics,
                predlog=lambda: self.predlog,
                shadow=self._shadow_rows,
                polls=settings.coalesce_polls,
            )
        manager.on_swap(self._on_swap)
        if manager.served.champion is not None:
            self._on_swap(manager.served)

    # ---------------------------------------------------------------- model changes
    def _on_swap(self, served: Served) -> None:
        champion = served.champion
        if champion is None:
            return
        names = champion.manifest.feature_names
        if self.parser is None or self.parser.names != tuple(names):
            self.parser = RowParser(names, self.settings.online_features, online_enabled=self.settings.online_enabled)
            self.arrow = ArrowReader(self.parser, self.settings.max_batch_rows)
        if self.predlog is None and self.settings.log_enabled:
            self.predlog = PredictionLog(
                self.settings.prediction_log_uri,
                names,
                metrics=self.metrics,
                flush_interval_s=self.settings.log_flush_interval_s,
                flush_rows=self.settings.log_flush_rows,
                max_pending_rows=self.settings.log_max_pending_rows,
                thread_nice=self.settings.log_thread_nice,
                thread_idle=self.settings.log_thread_idle,
            )
            if self._started:
                self.predlog.start()
        if self._started and not self._settled:
            self._settled = True
            # The first model arrives after start-up (from the manager's thread, before any
            # request can be scored): what it and the log brought in lives as long as the
            # process too.
            settle_heap()

    def start(self) -> None:
        # Imported before the first request, not by it (and so before the heap is settled).
        import prometheus_client.exposition  # noqa: F401  # /metrics
        import pyarrow.compute  # batch ids
        import pyarrow.ipc  # noqa: F401  # batch bodies

        # A thread that holds the interpreter (the log's flush between its C calls, a shadow
        # call) makes the event loop wait for it: at most 1 ms instead of Python's 5.
        sys.setswitchinterval(0.001)
        self._started = True
        if self.predlog is not None:
            self.predlog.start()
        s = self.settings
        if s.online_enabled and self.online is None:
            self.online = OnlineFeatures(
                s.redis_url.get_secret_value(),
                project=s.feast_project,
                view=s.online_view,
                entity_key=s.online_entity_key,
                feature_names=s.online_features,
                timeout_s=s.online_timeout_ms / 1000.0,
                breaker_failures=s.online_breaker_failures,
                cooldown_s=s.online_cooldown_s,
                metrics=self.metrics,
            )

    async def stop(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=self.settings.graceful_timeout_s)
        self.manager.stop()
        self.executor.shutdown(wait=True)
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.close, self.settings.graceful_timeout_s)
        if self.online is not None:
            await self.online.close()

    # ---------------------------------------------------------------- admission
    def admit(self, request: Request) -> tuple[Served, Model, RowParser]:
        """What a scoring request is served with; 401 without a valid key, 503 before a model is loaded."""
        if self.scoring_keys is not None and not self.scoring_keys.accepts(presented_key(request.headers)):
            raise InputError(401, "unauthorized", "a valid API key is required (header X-API-Key)")
        served = self.manager.served
        champion = served.champion
        if champion is None or self.parser is None:
            raise InputError(503, "not_ready", f"no model loaded: {self.manager.not_ready_reason}")
        return served, champion, self.parser

    # ---------------------------------------------------------------- routing
    def goes_to_challenger(self, card_id: int | None, request_id: str) -> bool:
        """Sticky canary: a salted hash of the card id (or the request id) below the share."""
        key = card_id.to_bytes(8, "little", signed=True) if card_id is not None else request_id.encode()
        digest = hashlib.blake2b(key, digest_size=4, key=self._salt).digest()
        return int.from_bytes(digest, "little") < self._threshold

    # ---------------------------------------------------------------- online features
    async def fill_online(self, x: np.ndarray, card_ids: list[int | None], rows: list[int], model: Model) -> list[str]:
        """Fill the NaN online features of ``x[rows]`` in place; returns the source of each of those rows."""
        parser = self.parser
        assert parser is not None
        cols = parser.online_idx
        cards = [int(card_ids[r]) for r in rows]  # type: ignore[arg-type]  # rows needing online have a card id
        sources = ["online_store"] * len(rows)
        fetched: np.ndarray | None = None
        reason = ""
        if self.online is None:
            reason = "online store not configured"
        else:
            try:
                fetched = await self.online.fetch(cards)
            except OnlineStoreUnavailable as exc:
                reason = str(exc)
        if fetched is not None:
            # Columns of the fetch are in settings order; pick the ones this model reads, in its order.
            order = [self.online.feature_names.index(n) for n in parser.online_names]  # type: ignore[union-attr]
            fetched = fetched[:, order]
        means = model.reference_means()
        for j, r in enumerate(rows):
            sub = x[r, cols]
            missing = np.isnan(sub)
            got = fetched[j] if fetched is not None else None
            if got is not None and not np.all(np.isnan(got)):
                sub[missing] = got[missing]
                missing = np.isnan(sub)
            if missing.any():
                if self.settings.online_fallback == "error" or means is None:
                    if got is None:
                        raise InputError(
                            503, "online_store_unavailable", f"{reason}; send the card features in the request"
                        )
                    raise InputError(
                        422,
                        "unknown_card",
                        f"card {cards[j]} has no online features; send the card features in the request",
                    )
                sub[missing] = means[cols][missing]
                sources[j] = "fallback"
            x[r, cols] = sub
        return sources

    def _shadow_rows(
        self, x: np.ndarray, request_ids: list[str], txns: list[str | None], cards: list[int | None], t0: float
    ) -> None:
        """Champion rows of a micro-batch: scored by a shadowing challenger after the responses."""
        challenger = self.manager.served.challenger
        if challenger is not None and self.mode == "shadow":
            self.background(_shadow, self, challenger, x, request_ids, txns, cards, t0)

    def log(self, chunk: Chunk) -> None:
        if self.predlog is not None:
            self.predlog.append(chunk)

    def background(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in the inference pool after the response; errors are logged."""
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        self._background.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("shadow scoring failed: %s", fut.exception())


def _body_headers(request: Request) -> tuple[bytes | None, bytes | None, bytes | None]:
    """Content-Type, Content-Length and Accept from the raw ASGI headers, in one pass
    (Starlette's ``Headers`` costs more per request than reading the three)."""
    ctype = length = accept = None
    for name, value in request.scope["headers"]:  # the first of each, as Starlette's Headers.get
        if name == b"content-type":
            ctype = value if ctype is None else ctype
        elif name == b"content-length":
            length = value if length is None else length
        elif name == b"accept":
            accept = value if accept is None else accept
    return ctype, length, accept


async def _read_body(request: Request, limit: int, length: bytes | None) -> bytes:
    """The body, read from the ASGI messages directly (``Request.body`` goes through an async
    generator per request), refused as soon as it is known to exceed ``limit``."""
    if length is not None:
        if not length.isdigit():
            raise InputError(400, "invalid_content_length", "Content-Length must be a non-negative integer")
        if int(length) > limit:
            raise InputError(
                413, "body_too_large", f"body of {int(length):,} bytes exceeds the limit of {limit:,} bytes"
            )
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client went away
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise InputError(413, "body_too_large", f"body exceeds the limit of {limit:,} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_ARROW_TYPE = ARROW_STREAM.encode()


class _Answer(Response):
    """A 200 answer (JSON unless said) whose two headers are built directly (Starlette's
    general header handling costs more per request than the answer's serialization)."""

    media_type = JSON

    def __init__(self, body: bytes, content_type: bytes = b"application/json") -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", content_type)]


def _check_json(ctype: bytes | None) -> None:
    if ctype is not None and b"json" not in ctype.lower():
        shown = ctype.decode("latin-1")[:80]
        raise InputError(415, "unsupported_media_type", f"send application/json, not {shown!r}")


def _loads(body: bytes) -> Any:
    if not body:
        raise InputError(400, "empty_body", "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def create_app(
    settings: ServingSettings | None = None,
    *,
    manager: Any = None,
    metrics: Metrics | None = None,
    background: bool = True,
) -> FastAPI:
    """The predictor app. ``manager`` defaults to one on the source the settings choose.

    ``background=False`` starts neither the polling thread nor the log's flushing thread
    (tests drive refreshes and flushes themselves).
    """
    from fraudops_serving.manager import ModelManager
    from fraudops_serving.sources import make_source

    settings = settings or ServingSettings()
    metrics = metrics or Metrics()
    if manager is None:
        manager = ModelManager(settings, make_source(settings), metrics)
    rt = Runtime(settings, manager, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.start()
        if background:
            manager.start()
            if settings.workers > 1:
                # One of several workers: it starts listening when start-up is over (see
                # server.Supervisor), so it waits for its first load (served or refused) to
                # take no scoring request that the others could have scored.
                await asyncio.to_thread(manager.first_refresh.wait, FIRST_LOAD_WAIT_S)
        settle_heap()
        log.info("predictor %s starting (source: %s)", __version__, manager.source.kind)
        try:
            yield
        finally:
            log.info("predictor shutting down: flushing the prediction log")
            await rt.stop()

    app = FastAPI(
        title="fraudops predictor",
        version=__version__,
        description=docs.DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=docs.TAGS,
    )
    app.state.runtime = rt
    m = metrics

    # ------------------------------------------------------------------ scoring
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        served, champion, parser = rt.admit(request)
        ctype, length, _ = _body_headers(request)
        _check_json(ctype)
        body = await _read_body(request, settings.max_body_bytes, length)
        item = parser.item(_loads(body), bools=may_hold_bools(body))
        request_id = item.request_id or new_request_id()
        model, variant = champion, "champion"
        challenger = served.challenger
        if challenger is not None and rt.mode == "canary" and rt.goes_to_challenger(item.card_id, request_id):
            model, variant = challenger, "challenger"
        row = item.row
        source = "request"
        if item.needs_online:
            x = row.reshape(1, -1)
            source = (await rt.fill_online(x, [item.card_id], [0], champion))[0]
        coalescer = rt.coalescer
        if coalescer is not None:
            # Scored, logged and counted with the other rows of this event-loop turn.
            scored = await coalescer.score(model, variant, row, request_id, item.transaction_id, item.card_id, t0)
            probability, decision = scored.probability, scored.decision
        else:
            if rt.inline_max_rows >= 1:
                np.copyto(model.buffer[0], row)
                probability = model.predict_one()
            else:
                loop = asyncio.get_running_loop()
                probability = float((await loop.run_in_executor(rt.executor, model.predict, row[None]))[0])
            if not 0.0 <= probability <= 1.0:  # NaN too: extreme inputs can overflow inside the graph
                raise InputError(422, "unscorable_input", UNSCORABLE)
            decision = 1 if probability >= model.threshold else 0
        body = orjson.dumps(
            {
                "request_id": request_id,
                "probability": probability,
                "decision": decision,
                "threshold": model.threshold,
                "model_name": model.name,
                "model_version": model.version,
                "variant": variant,
                "feature_source": source,
            }
        )
        elapsed = time.perf_counter() - t0
        if coalescer is None:
            if rt.predlog is not None:
                rt.predlog.append_row(
                    request_id,
                    time.time_ns() // 1000,
                    item.transaction_id,
                    item.card_id,
                    model.name,
                    model.version,
                    variant,
                    probability,
                    decision,
                    elapsed * 1000.0,
                    row,
                )
            m.scoring.predicted(variant, 1, decision)
            if challenger is not None and rt.mode == "shadow":
                rt.background(
                    _shadow, rt, challenger, row[None], [request_id], [item.transaction_id], [item.card_id], t0
                )
        m.scoring.answered(m.predict, elapsed)
        return _Answer(body)

    async def predict_batch(request: Request) -> Response:
        t0 = time.perf_counter()
        import pyarrow as pa  # imported at start-up (Runtime.start): a dictionary lookup here

        served, champion, parser = rt.admit(request)
        raw_ctype, length, raw_accept = _body_headers(request)
        ctype = (raw_ctype or b"application/json").decode("latin-1").lower()
        body = await _read_body(request, settings.max_body_bytes, length)
        columnar: np.ndarray | None = None  # the features as a view of an Arrow body: what the log copies
        if ARROW_STREAM in ctype:
            reader = rt.arrow
            if reader is None or reader.parser is not parser:  # a swap between admission and here
                reader = ArrowReader(parser, settings.max_batch_rows)
            x, ids, columnar = reader.parse(body)
        elif "json" in ctype:
            x, ids = _parse_json_batch(_loads(body), parser, settings.max_batch_rows, bools=may_hold_bools(body))
        else:
            raise InputError(415, "unsupported_media_type", f"send {JSON} or {ARROW_STREAM}, not {ctype[:80]!r}")
        n = x.shape[0]
        batch_id = ids.batch_id or uuid.uuid4().hex
        request_ids = ids.filled_request_ids(batch_id)
        card_ids: list[int | None] | None = None  # Python values only where a per-row decision needs them
        source_codes = np.zeros(n, dtype=np.int8)
        if parser.online_enabled and parser.online_idx.size:
            rows = np.flatnonzero(np.isnan(x[:, parser.online_idx]).any(axis=1)).tolist()
            if rows:
                card_ids = ids.cards()
                x = np.ascontiguousarray(x) if x.flags.writeable else np.array(x, order="C")
                sources = await rt.fill_online(x, card_ids, rows, champion)
                columnar = None  # x now holds what the store filled in
                source_codes[rows] = [SOURCES.index(src) for src in sources]
        challenger = served.challenger
        to_chal = np.zeros(n, dtype=bool)
        if challenger is not None and rt.mode == "canary" and rt.share > 0:
            card_ids = card_ids if card_ids is not None else ids.cards()
            to_chal = np.fromiter(
                (rt.goes_to_challenger(c, r) for c, r in zip(card_ids, request_ids.to_pylist(), strict=True)),
                dtype=bool,
                count=n,
            )
        groups = [("champion", champion, ~to_chal)]
        if to_chal.any():
            groups.append(("challenger", challenger, to_chal))  # type: ignore[arg-type]
        arrow_out = ARROW_STREAM in (raw_accept or b"").decode("latin-1")
        txn_col, card_col = ids.transactions(), ids.card_column()

        def finish() -> tuple[bytes, list[tuple[str, int, int]]]:
            """Score, answer and log the batch; returns the answer and (variant, rows, fraud) counts.

            Runs in a worker thread (but for a few rows): the event loop is the one thread every
            request goes through, and this is most of a batch's work (the model, the row-major
            copy of an Arrow body's view, the answer, the log's copy), much of it without the
            interpreter lock. Nothing is logged unless every row was scored.
            """
            used: list[tuple[str, Model, np.ndarray | None]] = []  # idx None: every row
            probability = decision = None
            for variant, model, mask in groups:
                idx = None if len(groups) == 1 else np.flatnonzero(mask)
                if idx is not None and idx.size == 0:
                    continue
                p = model.predict(x if idx is None else x[idx])
                bad = ~((p >= 0.0) & (p <= 1.0))
                if bad.any():
                    where = np.flatnonzero(bad) if idx is None else idx[bad]
                    rows_bad = ", ".join(f"transactions[{i}]" for i in where[:5].tolist())
                    raise InputError(422, "unscorable_input", f"{rows_bad}: {UNSCORABLE}")
                d = (p >= model.threshold).astype(np.int8)
                if idx is None:
                    probability, decision = p, d
                else:
                    if probability is None or decision is None:
                        probability, decision = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.int8)
                    probability[idx], decision[idx] = p, d
                used.append((variant, model, idx))
            assert probability is not None and decision is not None
            versions = (champion.version, challenger.version if challenger is not None else champion.version)
            variant_codes = to_chal.astype(np.int8)
            if arrow_out:
                from fraudops_serving.arrow import arrow_response

                meta = {"batch_id": batch_id, "model_name": champion.name, "threshold": str(champion.threshold)}
                out = arrow_response(
                    request_ids,
                    txn_col,
                    probability,
                    decision,
                    variant_codes,
                    VARIANT_CODES,
                    versions,
                    source_codes,
                    meta,
                )
            else:
                out = _json_batch_answer(
                    batch_id, champion, request_ids, ids, probability, decision, variant_codes, versions, source_codes
                )
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            ts_us = time.time_ns() // 1000
            counts = []
            for variant, model, idx in used:
                take = None if idx is None else pa.array(idx)
                dec = decision if idx is None else decision[idx]
                rt.log(
                    Chunk(
                        request_ids if take is None else request_ids.take(take),
                        ts_us,
                        txn_col if take is None else txn_col.take(take),
                        card_col if take is None else card_col.take(take),
                        model.name,
                        model.version,
                        variant,
                        probability if idx is None else probability[idx],
                        dec,
                        elapsed_ms,
                        (x if columnar is None else columnar) if idx is None else x[idx],
                    )
                )
                counts.append((variant, dec.size, int(np.count_nonzero(dec))))
            return out, counts

        if n <= rt.inline_max_rows:
            out, counts = finish()
        else:
            out, counts = await asyncio.get_running_loop().run_in_executor(rt.executor, finish)
        for variant, rows_scored, fraud in counts:
            m.scoring.predicted(variant, rows_scored, fraud)
        if challenger is not None and rt.mode == "shadow":
            rt.background(_shadow, rt, challenger, x, request_ids, txn_col, card_col, t0)
        m.scoring.answered(m.batch, time.perf_counter() - t0)
        return _Answer(out, _ARROW_TYPE if arrow_out else b"application/json")

    # The scoring routes are plain Starlette routes: FastAPI's request handling (dependency
    # solving, an exit stack per request) costs 18 us a request, more than the model, and
    # these handlers take the raw request anyway. Their APIRoute twins below are never
    # mounted; they only describe the endpoints in the OpenAPI schema.
    # First in the table: a request walks the routes in order until one matches.
    score_one, score_batch = _guarded("predict", predict, m), _guarded("predict_batch", predict_batch, m)
    app.router.routes[:0] = [
        Route("/predict", score_one, methods=["POST"], name="predict"),
        Route("/predict/batch", score_batch, methods=["POST"], name="predict_batch"),
    ]
    described = [
        APIRoute(
            "/predict",
            score_one,
            methods=["POST"],
            tags=["scoring"],
            summary="Score one transaction",
            description=docs.PREDICT,
            responses=docs.PREDICT_RESPONSES,
            openapi_extra=docs.body("PredictRequest", docs.PREDICT_EXAMPLES),
            operation_id="predict",
        ),
        APIRoute(
            "/predict/batch",
            score_batch,
            methods=["POST"],
            tags=["scoring"],
            summary="Score many transactions",
            description=docs.BATCH,
            responses=docs.BATCH_RESPONSES,
            openapi_extra=docs.body("BatchRequest", docs.BATCH_EXAMPLES, arrow=True),
            operation_id="predict_batch",
        ),
    ]

    # ------------------------------------------------------------------ operations
    @app.get("/health", tags=["operations"], summary="Liveness", responses=docs.HEALTH_RESPONSES, operation_id="health")
    async def health() -> Response:
        """Alive: the process answers (whether or not a model is loaded; see /ready)."""
        return _json({"status": "ok", "version": __version__, "pid": os.getpid()})

    @app.get("/ready", tags=["operations"], summary="Readiness", responses=docs.READY_RESPONSES, operation_id="ready")
    async def ready() -> Response:
        """Ready when a checked champion is loaded; else 503 with the reason (registry down, alias unset, refused)."""
        champion = manager.served.champion
        if champion is None:
            return _json({"ready": False, "reason": manager.not_ready_reason}, 503)
        return _json({"ready": True, "model_name": champion.name, "model_version": champion.version})

    @app.get(
        "/model", tags=["operations"], summary="What is served", responses=docs.MODEL_RESPONSES, operation_id="model"
    )
    async def model_info() -> Response:
        """Served champion and challenger with manifests, traffic split, refused bundles, reload history."""
        info = manager.describe()
        info["traffic"] = {"challenger_mode": rt.mode, "canary_share": rt.share, "sticky_by": "card_id"}
        info["online_features"] = {
            "enabled": settings.online_enabled,
            "features": list(settings.online_features),
            "timeout_ms": settings.online_timeout_ms,
            "fallback": settings.online_fallback,
        }
        info["micro_batching"] = describe_coalescer(rt.coalescer)
        return _json(info)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        responses=docs.METRICS_RESPONSES,
        operation_id="metrics",
    )
    async def metrics_endpoint() -> Response:
        """Prometheus text: requests, latency histogram, predictions by variant/decision, errors, served version."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if rt.predlog is not None:
            m.log_pending.set(rt.predlog.pending_rows)
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/reload",
        tags=["admin"],
        summary="Reload now",
        responses=docs.RELOAD_RESPONSES,
        openapi_extra={"security": [{"ApiKeyHeader": []}]},
        operation_id="admin_reload",
    )
    async def admin_reload(request: Request) -> Response:
        """Resolve the aliases now, load and check what changed beside the served models, and swap.

        Requires an admin API key. 200 when nothing was refused; 409 when a bundle was refused
        (the previous one keeps serving; the body says why).
        """
        if not rt.admin_keys:
            return _error(403, "admin_disabled", "admin endpoints are disabled: set FRAUDOPS_SERVING_ADMIN_API_KEYS")
        if not rt.admin_keys.accepts(presented_key(request.headers)):
            return _error(401, "unauthorized", "a valid admin API key is required (header X-API-Key)")
        outcomes = await asyncio.to_thread(manager.refresh)
        refused = [o for o in outcomes if o.action in ("refused", "still_refused")]
        payload = {
            "outcomes": [o.to_dict() for o in outcomes],
            "serving": {k: {"model_name": n, "model_version": v} for k, (n, v) in manager.served.variants().items()},
        }
        return _json(payload, 409 if refused else 200)

    docs.install(app, rt, described)
    return app


def _guarded(
    endpoint: str, handler: Callable[[Request], Awaitable[Response]], m: Metrics
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` answering every refusal with its 4xx and anything unexpected with a logged 500, counted."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except InputError as exc:
            m.scoring.failed(endpoint, exc.status)
            m.errors.labels(endpoint, exc.code).inc()
            return _error(exc.status, exc.code, exc.message)
        except Exception:
            log.exception("%s failed", endpoint)
            m.scoring.failed(endpoint, 500)
            m.errors.labels(endpoint, "internal").inc()
            return _error(500, "internal", "internal error; it has been logged")

    guarded.__name__ = guarded.__qualname__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def _parse_json_batch(
    payload: Any, parser: RowParser, max_rows: int, *, bools: bool = True
) -> tuple[np.ndarray, BatchIds]:
    if type(payload) is not dict:
        raise InputError(422, "invalid_body", "the body must be a JSON object with a 'transactions' array")
    extra = sorted(k for k in payload if k not in ("transactions", "batch_id"))
    if extra:
        raise InputError(
            422,
            "unknown_field",
            f"unknown field(s) {', '.join(repr(k[:64]) for k in extra[:5])}; allowed: batch_id, transactions",
        )
    batch_id = payload.get("batch_id")
    if batch_id is not None and (type(batch_id) is not str or not 1 <= len(batch_id) <= 64):
        raise InputError(422, "invalid_id", "batch_id must be a string of 1 to 64 characters")
    items = payload.get("transactions")
    if type(items) is not list:
        raise InputError(422, "invalid_body", "field 'transactions' must be an array of transactions")
    if not items:
        raise InputError(422, "empty_batch", "the batch has no transactions")
    if len(items) > max_rows:
        raise InputError(
            413, "batch_too_large", f"the batch has {len(items):,} transactions; the maximum is {max_rows:,}"
        )
    n = len(items)
    x = np.empty((n, parser.n), dtype=np.float32)
    cards: list[int | None] = []
    txns: list[str | None] = []
    rids: list[str | None] = []
    for i, obj in enumerate(items):
        it: Item = parser.item(obj, where=f"transactions[{i}]", bools=bools)
        x[i] = it.row
        cards.append(it.card_id)
        txns.append(it.transaction_id)
        rids.append(it.request_id)
    return x, ids_from_lists(cards, txns, rids, batch_id)


def _json_batch_answer(
    batch_id: str,
    champion: Model,
    request_ids: Any,
    ids: BatchIds,
    probability: np.ndarray,
    decision: np.ndarray,
    variant_codes: np.ndarray,
    versions: tuple[str, str],
    source_codes: np.ndarray,
) -> bytes:
    txns = ids.transactions().to_pylist()
    predictions = [
        {
            "request_id": rid,
            "transaction_id": txn,
            "probability": p,
            "decision": d,
            "model_version": versions[v],
            "variant": VARIANT_CODES[v],
            "feature_source": SOURCES[src],
        }
        for rid, txn, p, d, v, src in zip(
            request_ids.to_pylist(),
            txns,
            probability.tolist(),
            decision.tolist(),
            variant_codes.tolist(),
            source_codes.tolist(),
            strict=True,
        )
    ]
    return orjson.dumps(
        {
            "batch_id": batch_id,
            "model_name": champion.name,
            "count": len(predictions),
            "threshold": champion.threshold,
            "predictions": predictions,
        }
    )


def _shadow(
    rt: Runtime,
    challenger: Model,
    x: np.ndarray,
    request_ids: Any,
    txn_ids: Any,
    card_ids: Any,
    t0: float,
) -> None:
    """Score with the challenger after the response; only the log and the metrics see it."""
    p = challenger.predict(x)
    d = (p >= challenger.threshold).astype(np.int8)
    rt.log(
        Chunk(
            request_ids,
            time.time_ns() // 1000,
            txn_ids,
            card_ids,
            challenger.name,
            challenger.version,
            "shadow",
            p,
            d,
            (time.perf_counter() - t0) * 1000.0,
            x,
        )
    )
    fraud = int(d.sum())
    rt.metrics.scoring.predicted("shadow", len(d), fraud)
