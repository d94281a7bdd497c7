"""Micro-batching of /predict: the rows of one event-loop turn share one model call.

The requests are sent concurrently through httpx's ASGI transport, so they all reach the
model in the same turn of the event loop, as they do under load on a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from .conftest import NAMES, features


def _concurrently(app: Any, payloads: list[dict[str, Any]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://predictor") as client:
            return list(await asyncio.gather(*(client.post("/predict", json=p) for p in payloads)))

    return asyncio.run(go())


def _raw(bundle: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(bundle / "model.onnx"))
    return np.asarray(session.run(None, {"features": rows})[0]).reshape(-1)


def _logged(app: Any) -> Any:
    import pyarrow.dataset as ds

    rt = app.state.runtime
    rt.predlog.flush()
    return ds.dataset(rt.predlog.root, format="parquet", partitioning="hive").to_table()


def test_rows_of_one_turn_share_one_call_and_each_gets_its_own_answer(
    make_bundle: Callable[..., Path], app_factory: Callable[..., Any]
) -> None:
    bundle = make_bundle("5", threshold=0.3)
    client, app = app_factory(bundle)
    rows = np.array([[features(i)[n] for n in NAMES] for i in range(24)], dtype=np.float32)
    bad = {3, 11, 17}  # no finite probability: these fail, alone
    payloads = []
    for i in range(24):
        values = [3e38] * len(NAMES) if i in bad else rows[i].tolist()
        payloads.append({"features": values, "request_id": f"r-{i}", "transaction_id": f"t-{i}", "card_id": i})
    rt = app.state.runtime
    calls = rt.coalescer.calls
    answers = _concurrently(app, payloads)
    assert rt.coalescer.calls == calls + 1  # 24 rows, one model call
    raw = _raw(bundle, rows)
    good = [i for i in range(24) if i not in bad]
    for i, r in enumerate(answers):
        if i in bad:
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "unscorable_input"
            continue
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["request_id"] == f"r-{i}"
        assert body["probability"] == pytest.approx(float(raw[i]), rel=1e-5)
        assert body["decision"] == int(raw[i] >= 0.3)
        assert body["variant"] == "champion"
    logged = _logged(app)
    assert logged.column("request_id").to_pylist() == [f"r-{i}" for i in good]
    assert logged.column("transaction_id").to_pylist() == [f"t-{i}" for i in good]
    assert logged.column("card_id").to_pylist() == good
    np.testing.assert_array_equal(np.column_stack([logged.column(c).to_numpy() for c in NAMES]), rows[good])
    np.testing.assert_allclose(logged.column("probability").to_numpy(), raw[good], rtol=1e-5)
    assert (logged.column("latency_ms").to_numpy() >= 0).all()
    text = client.get("/metrics").text
    scored = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('fraudops_predictions_total{decision="') and 'variant="champion"' in line
    )
    assert scored == len(good)
    assert 'fraudops_errors_total{endpoint="predict",reason="unscorable_input"} 3.0' in text
    info = client.get("/model").json()["micro_batching"]
    assert info["enabled"] and info["max_rows"] == 32 and info["rows"] >= 24


def test_a_call_holds_at_most_max_rows(make_bundle: Callable[..., Path], app_factory: Callable[..., Any]) -> None:
    bundle = make_bundle("6")
    _client, app = app_factory(bundle, coalesce_max_rows=4)
    rows = np.array([[features(i)[n] for n in NAMES] for i in range(10)], dtype=np.float32)
    answers = _concurrently(app, [{"features": r.tolist()} for r in rows])
    assert [r.status_code for r in answers] == [200] * 10
    assert app.state.runtime.coalescer.calls == 3  # 4 + 4 + 2
    raw = _raw(bundle, rows)
    np.testing.assert_allclose([r.json()["probability"] for r in answers], raw, rtol=1e-5)
    assert len({r.json()["request_id"] for r in answers}) == 10


def test_canary_rows_of_one_turn_go_to_their_own_model(
    make_bundle: Callable[..., Path], app_factory: Callable[..., Any], tmp_path: Path
) -> None:
    champion = make_bundle("1", where=tmp_path / "champion")
    challenger = make_bundle("2", where=tmp_path / "challenger")
    _client, app = app_factory(champion, challenger_dir=challenger, canary_share=0.5)
    rt = app.state.runtime
    rows = np.array([[features(i)[n] for n in NAMES] for i in range(30)], dtype=np.float32)
    answers = _concurrently(app, [{"features": r.tolist(), "card_id": i} for i, r in enumerate(rows)])
    expected = {"champion": _raw(champion, rows), "challenger": _raw(challenger, rows)}
    variants = []
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        body = r.json()
        variant = "challenger" if rt.goes_to_challenger(i, "") else "champion"
        assert body["variant"] == variant
        assert body["model_version"] == {"champion": "1", "challenger": "2"}[variant]
        assert body["probability"] == pytest.approx(float(expected[variant][i]), rel=1e-5)
        variants.append(variant)
    assert set(variants) == {"champion", "challenger"}
    assert rt.coalescer.calls == 2  # one call per model
    logged = _logged(app)
    by_id = dict(zip(logged.column("card_id").to_pylist(), logged.column("variant").to_pylist(), strict=True))
    assert by_id == dict(enumerate(variants))


def test_max_rows_one_scores_each_row_by_itself(
    make_bundle: Callable[..., Path], app_factory: Callable[..., Any]
) -> None:
    bundle = make_bundle("7")
    client, app = app_factory(bundle, coalesce_max_rows=1)
    assert app.state.runtime.coalescer is None
    rows = np.array([[features(i)[n] for n in NAMES] for i in range(6)], dtype=np.float32)
    answers = _concurrently(app, [{"features": r.tolist(), "request_id": f"q-{i}"} for i, r in enumerate(rows)])
    np.testing.assert_allclose([r.json()["probability"] for r in answers], _raw(bundle, rows), rtol=1e-5)
    assert sorted(_logged(app).column("request_id").to_pylist()) == [f"q-{i}" for i in range(6)]
    assert client.get("/model").json()["micro_batching"] == {"enabled": False}


def test_a_failing_call_fails_its_own_requests_and_the_next_call_works(make_bundle: Callable[..., Path]) -> None:
    """ONNX Runtime refusing a call (here: rows of the wrong width) answers each of its requests
    with the error; nothing hangs, and the next turn's call scores normally."""
    from concurrent.futures import ThreadPoolExecutor

    from fraudops_serving.bundle import load_bundle
    from fraudops_serving.coalesce import Coalescer
    from fraudops_serving.metrics import Metrics

    bundle = make_bundle("8")
    model = load_bundle(bundle)
    rows = np.array([[features(i)[n] for n in NAMES] for i in range(3)], dtype=np.float32)

    async def go(inline: bool) -> tuple[list[Any], list[Any]]:
        with ThreadPoolExecutor(1) as pool:
            c = Coalescer(max_rows=8, inline=inline, executor=pool, metrics=Metrics(), predlog=lambda: None)
            bad = [c.score(model, "champion", r[:-1], f"b{i}", None, None, 0.0) for i, r in enumerate(rows)]
            failed = await asyncio.gather(*bad, return_exceptions=True)
            good = [c.score(model, "champion", r, f"g{i}", None, None, 0.0) for i, r in enumerate(rows)]
            return failed, list(await asyncio.gather(*good))

    for inline in (True, False):
        failed, scored = asyncio.run(go(inline))
        assert all(isinstance(e, Exception) and "features" in str(e) for e in failed), failed
        np.testing.assert_allclose([s.probability for s in scored], _raw(bundle, rows), rtol=1e-5)


def test_rows_read_in_the_next_poll_join_the_call(make_bundle: Callable[..., Path]) -> None:
    """With ``polls=2`` (the default) a row queued one event-loop turn after the first shares
    its call; with ``polls=1`` it makes a call of its own; two turns later, a new call either way."""
    from concurrent.futures import ThreadPoolExecutor

    from fraudops_serving.bundle import load_bundle
    from fraudops_serving.coalesce import Coalescer
    from fraudops_serving.metrics import Metrics

    bundle = make_bundle("9")
    model = load_bundle(bundle)
    rows = np.array([[features(i)[n] for n in NAMES] for i in range(3)], dtype=np.float32)

    async def go(polls: int, gaps: list[int]) -> tuple[int, list[float]]:
        with ThreadPoolExecutor(1) as pool:
            c = Coalescer(max_rows=8, inline=True, executor=pool, metrics=Metrics(), predlog=lambda: None, polls=polls)
            futures = []
            for i, gap in enumerate(gaps):
                for _ in range(gap):
                    await asyncio.sleep(0)  # one turn of the loop: one poll for I/O
                futures.append(c.score(model, "champion", rows[i], f"r{i}", None, None, 0.0))
            scored = await asyncio.gather(*futures)
            return c.calls, [s.probability for s in scored]

    raw = _raw(bundle, rows)
    for polls, gaps, calls in ((2, [0, 1, 0], 1), (1, [0, 1, 0], 2), (2, [0, 2, 0], 2), (3, [0, 1, 1], 1)):
        made, probabilities = asyncio.run(go(polls, gaps))
        assert made == calls, (polls, gaps)
        np.testing.assert_allclose(probabilities, raw, rtol=1e-5)
