"""Online card features from a real Redis server in Feast's layout: hits, unknown cards, outages, time budget."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fraudops import schema
from fraudops_serving.online import decode_value, feast_field, feast_key, murmur3_32
from tests.integration.conftest import RedisServer, start_redis_server, stop_redis_server

from .conftest import NAMES, features

CARD = list(schema.CARD_FEATURE_NAMES)


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis_server(tmp_path_factory.mktemp("serving-redis"))
    try:
        yield server
    finally:
        stop_redis_server(server)


def _store_card(server: RedisServer, card_id: int, values: dict[str, float]) -> None:
    import redis

    client = redis.Redis(host=server.host, port=server.port)
    mapping = {feast_field("card_profile", n): b"\x35" + struct.pack("<f", v) for n, v in values.items()}
    mapping[b"_ts:card_profile"] = b"\x08\x01"
    client.hset(feast_key("card_id", card_id, "fraudops"), mapping=mapping)  # type: ignore[arg-type]
    client.close()


def test_murmur3_is_the_hash_feast_uses() -> None:
    import mmh3

    for text in ["", "a", "ab", "abc", "abcd", "card_profile:card_age_days", "ünïcode:x" * 7]:
        data = text.encode()
        assert murmur3_32(data) == mmh3.hash(data, signed=False), text
    # Feast's _mmh3(): the first 4 bytes of the little-endian u64 of the unsigned hash.
    assert feast_field("card_profile", "card_age_days") == bytes.fromhex(
        struct.pack("<Q", mmh3.hash(b"card_profile:card_age_days", signed=False)).hex()[:8]
    )


def test_value_protobuf_decoding() -> None:
    assert decode_value(b"\x35" + struct.pack("<f", 2.5)) == 2.5
    assert decode_value(b"\x29" + struct.pack("<d", -1.25)) == -1.25
    assert decode_value(b"\x20\x96\x01") == 150.0  # int64 varint
    assert decode_value(b"\x20" + b"\xff" * 9 + b"\x01") == -1.0  # negative int64
    assert np.isnan(decode_value(None)) and np.isnan(decode_value(b""))


@pytest.fixture
def online_app(
    redis_srv: RedisServer, make_bundle: Callable[..., Path], app_factory: Callable[..., Any]
) -> Callable[..., Any]:
    import redis

    redis.Redis(host=redis_srv.host, port=redis_srv.port).flushdb()

    def make(url: str | None = None, **kw: Any) -> Any:
        bundle = make_bundle("1")
        client, _ = app_factory(
            bundle,
            redis_url=url or redis_srv.url(0),
            online_features=",".join(CARD),
            online_timeout_ms=kw.pop("online_timeout_ms", 200),
            **kw,
        )
        return client

    return make


def test_card_features_come_from_the_store(online_app: Callable[..., Any], redis_srv: RedisServer) -> None:
    client = online_app()
    row = features(1)
    _store_card(redis_srv, 4211, {n: row[n] for n in CARD})
    full = client.post("/predict", json={"features": row, "card_id": 4211}).json()
    assert full["feature_source"] == "request"
    without = {n: v for n, v in row.items() if n not in CARD}
    fetched = client.post("/predict", json={"features": without, "card_id": 4211}).json()
    assert fetched["feature_source"] == "online_store"
    assert fetched["probability"] == pytest.approx(full["probability"], rel=1e-6)
    # Without a card id the card features cannot be fetched: a specific 422.
    r = client.post("/predict", json={"features": without})
    assert r.status_code == 422 and "only when card_id is given" in r.json()["detail"]
    # Batch: one pipelined round trip for the rows that need it; others keep their own values.
    r = client.post(
        "/predict/batch",
        json={
            "transactions": [
                {"features": without, "card_id": 4211},
                {"features": row, "card_id": 4211},
                {"features": without, "card_id": 5},
            ]
        },
    ).json()
    sources = [p["feature_source"] for p in r["predictions"]]
    assert sources == ["online_store", "request", "fallback"]
    assert r["predictions"][0]["probability"] == pytest.approx(full["probability"], rel=1e-6)
    text = client.get("/metrics").text
    assert 'fraudops_online_features_total{result="hit"} 2.0' in text
    assert 'fraudops_online_features_total{result="unknown_card"} 1.0' in text


def test_unknown_card_falls_back_to_training_means(online_app: Callable[..., Any]) -> None:
    client = online_app()
    row = features(2)
    without = {n: v for n, v in row.items() if n not in CARD}
    r = client.post("/predict", json={"features": without, "card_id": 999})
    assert r.status_code == 200 and r.json()["feature_source"] == "fallback"
    means = client.app.state.runtime.manager.served.champion.reference_means()
    filled = {**row, **{n: float(means[NAMES.index(n)]) for n in CARD}}
    expected = client.post("/predict", json={"features": filled}).json()["probability"]
    assert r.json()["probability"] == pytest.approx(expected, rel=1e-5)


def test_store_down_falls_back_and_opens_the_breaker(online_app: Callable[..., Any]) -> None:
    from .conftest import free_port

    client = online_app(url=f"redis://127.0.0.1:{free_port()}/0", online_breaker_failures=3, online_cooldown_s=60)
    without = {n: v for n, v in features(3).items() if n not in CARD}
    for _ in range(5):
        r = client.post("/predict", json={"features": without, "card_id": 1})
        assert r.status_code == 200 and r.json()["feature_source"] == "fallback"
    text = client.get("/metrics").text
    assert 'fraudops_online_features_total{result="error"} 3.0' in text
    assert 'fraudops_online_features_total{result="circuit_open"} 2.0' in text


def test_error_policy_answers_503_for_a_dead_store_and_422_for_an_unknown_card(
    online_app: Callable[..., Any], redis_srv: RedisServer
) -> None:
    from .conftest import free_port

    without = {n: v for n, v in features(4).items() if n not in CARD}
    dead = online_app(url=f"redis://127.0.0.1:{free_port()}/0", online_fallback="error")
    r = dead.post("/predict", json={"features": without, "card_id": 1})
    assert r.status_code == 503 and r.json()["code"] == "online_store_unavailable"
    assert "send the card features in the request" in r.json()["detail"]
    live = online_app(online_fallback="error")
    r = live.post("/predict", json={"features": without, "card_id": 123456})
    assert r.status_code == 422 and r.json()["code"] == "unknown_card"


def test_a_slow_store_costs_at_most_the_time_budget(online_app: Callable[..., Any], redis_srv: RedisServer) -> None:
    import threading

    import redis

    client = online_app(online_timeout_ms=50)
    row = features(5)
    _store_card(redis_srv, 7, {n: row[n] for n in CARD})
    without = {n: v for n, v in row.items() if n not in CARD}
    assert client.post("/predict", json={"features": without, "card_id": 7}).json()["feature_source"] == "online_store"
    admin = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # the server stops answering for 1.5 s
    try:
        t0 = time.perf_counter()
        r = client.post("/predict", json={"features": without, "card_id": 7})
        elapsed = time.perf_counter() - t0
    finally:
        threading.Thread(target=lambda: admin.execute_command("CLIENT", "UNPAUSE"), daemon=True).start()
    assert r.status_code == 200 and r.json()["feature_source"] == "fallback"
    assert elapsed < 1.0, elapsed
    assert 'fraudops_online_features_total{result="timeout"} 1.0' in client.get("/metrics").text


@pytest.mark.slow
def test_reads_what_feast_materialized(
    fraudops_home: Path, redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout contract: Feast itself writes (materialize), the predictor's reader reads."""
    import asyncio

    import redis

    from fraudops.data.generate import generate_transactions
    from fraudops.data.warehouse import open_warehouse
    from fraudops.features.store import CardFeatureReader, apply, export_sources, materialize
    from fraudops.settings import get_settings
    from fraudops_serving.online import OnlineFeatures

    redis.Redis(host=redis_srv.host, port=redis_srv.port, db=1).flushdb()
    monkeypatch.setenv("FRAUDOPS_REDIS_URL", redis_srv.url(1))
    get_settings.cache_clear()
    settings = get_settings()
    table = generate_transactions(600, seed=11, n_cards=40, days=3)
    wh = open_warehouse(settings)
    try:
        wh.write_transactions(table, replace=True)
    finally:
        wh.close()
    export_sources(settings)
    apply(settings)
    ts = table.column(schema.EVENT_TIMESTAMP)
    from datetime import timedelta

    materialize(settings, ts[0].as_py(), ts[-1].as_py() + timedelta(seconds=1))
    cards = sorted(set(table.column(schema.CARD_ID).to_pylist()))[:10]
    expected = CardFeatureReader.open(settings).get(cards)

    async def read() -> np.ndarray:
        reader = OnlineFeatures(
            redis_srv.url(1),
            project=settings.feast_project,
            view="card_profile",
            entity_key="card_id",
            feature_names=CARD,
            timeout_s=2.0,
        )
        try:
            return await reader.fetch([*cards, 987654321])
        finally:
            await reader.close()

    got = asyncio.run(read())
    for i, card in enumerate(cards):
        np.testing.assert_array_equal(got[i], np.array([expected[card][n] for n in CARD], dtype=np.float32))
    assert np.all(np.isnan(got[-1]))  # unknown card
