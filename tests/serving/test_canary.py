"""Canary split (sticky by card id, share within statistical bounds) and shadow mode."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import NAMES, features


@pytest.fixture
def two_bundles(make_bundle: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    return make_bundle("1", where=tmp_path / "champion"), make_bundle("2", where=tmp_path / "challenger")


def _variant(client: Any, card: int | None, row: list[float]) -> dict[str, Any]:
    payload: dict[str, Any] = {"features": row}
    if card is not None:
        payload["card_id"] = card
    r = client.post("/predict", json=payload)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_canary_is_sticky_by_card_and_takes_its_share(
    two_bundles: tuple[Path, Path], app_factory: Callable[..., Any]
) -> None:
    champion, challenger = two_bundles
    share = 0.2
    client, app = app_factory(champion, challenger_dir=challenger, canary_share=share)
    assert client.get("/model").json()["challenger"]["model_version"] == "2"
    row = [features(0)[n] for n in NAMES]
    # Stickiness: every card meets the same variant on every request.
    for card in range(40):
        seen = {_variant(client, card, row)["variant"] for _ in range(5)}
        assert len(seen) == 1, f"card {card} met {seen}"
    # Share: the routing function itself over many cards (the same code the handler calls).
    rt = app.state.runtime
    n = 20_000
    hits = sum(rt.goes_to_challenger(card, "") for card in range(n))
    sd = math.sqrt(n * share * (1 - share))
    assert abs(hits - n * share) < 5 * sd, (hits, n * share, sd)
    # And over HTTP: the versions answer as the variants say.
    answers = [_variant(client, card, row) for card in range(1000, 1400)]
    by_variant = {a["variant"]: a["model_version"] for a in answers}
    assert by_variant == {"champion": "1", "challenger": "2"}
    k = sum(a["variant"] == "challenger" for a in answers)
    sd = math.sqrt(400 * share * (1 - share))
    assert abs(k - 400 * share) < 5 * sd
    text = client.get("/metrics").text
    assert 'fraudops_served_model_info{model_name="fraud-detector",model_version="2",variant="challenger"} 1.0' in text


def test_the_same_card_meets_the_same_variant_in_every_replica(
    two_bundles: tuple[Path, Path], app_factory: Callable[..., Any]
) -> None:
    champion, challenger = two_bundles
    _, a = app_factory(champion, challenger_dir=challenger, canary_share=0.3)
    _, b = app_factory(champion, challenger_dir=challenger, canary_share=0.3)
    cards = range(-500, 500)
    assert [a.state.runtime.goes_to_challenger(c, "") for c in cards] == [
        b.state.runtime.goes_to_challenger(c, "") for c in cards
    ]


def test_share_zero_and_one(two_bundles: tuple[Path, Path], app_factory: Callable[..., Any]) -> None:
    champion, challenger = two_bundles
    row = [features(0)[n] for n in NAMES]
    none, _ = app_factory(champion, challenger_dir=challenger, canary_share=0.0)
    assert {_variant(none, c, row)["variant"] for c in range(50)} == {"champion"}
    every, _ = app_factory(champion, challenger_dir=challenger, canary_share=1.0)
    assert {_variant(every, c, row)["variant"] for c in range(50)} == {"challenger"}
    batch = every.post(
        "/predict/batch", json={"transactions": [{"features": row, "card_id": c} for c in range(10)]}
    ).json()
    assert {p["variant"] for p in batch["predictions"]} == {"challenger"}
    assert {p["model_version"] for p in batch["predictions"]} == {"2"}


def test_shadow_mode_answers_with_the_champion_and_logs_the_challenger(
    two_bundles: tuple[Path, Path], app_factory: Callable[..., Any], tmp_path: Path
) -> None:
    import pyarrow.dataset as ds

    champion, challenger = two_bundles
    client, _app = app_factory(champion, challenger_dir=challenger, challenger_mode="shadow", canary_share=1.0)
    row = [features(0)[n] for n in NAMES]
    answers = [_variant(client, c, row) for c in range(30)]
    assert {a["variant"] for a in answers} == {"champion"} and {a["model_version"] for a in answers} == {"1"}
    batch = client.post("/predict/batch", json={"transactions": [{"features": row, "card_id": c} for c in range(10)]})
    assert {p["variant"] for p in batch.json()["predictions"]} == {"champion"}
    client.__exit__(None, None, None)  # graceful shutdown: waits for shadow scoring, flushes the log
    table = ds.dataset(str(tmp_path / "home" / "prediction_log"), format="parquet", partitioning="hive").to_table()
    counts = table.group_by(["variant", "model_version"]).aggregate([("request_id", "count")]).to_pylist()
    assert {(c["variant"], c["model_version"]): c["request_id_count"] for c in counts} == {
        ("champion", "1"): 40,
        ("shadow", "2"): 40,
    }
    champ = {r["request_id"]: r for r in table.filter(ds.field("variant") == "champion").to_pylist()}
    shadow = {r["request_id"]: r for r in table.filter(ds.field("variant") == "shadow").to_pylist()}
    assert champ.keys() == shadow.keys()  # the shadow row joins its champion row on the request id
