"""Hot reload: load beside, check, swap atomically; refuse a bad bundle and keep serving.

The load test runs a real predictor process and swaps its champion at least ten times
(one of them to a corrupt bundle, which must be refused) while concurrent clients score
without a single failed request.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fraudops_serving.manager import ModelManager
from fraudops_serving.metrics import Metrics
from fraudops_serving.settings import ServingSettings
from fraudops_serving.sources import make_source

from .conftest import ADMIN_KEY, NAMES, LiveServer, features, publish


def _manager(tmp_path: Path, served: Path, **kw: Any) -> ModelManager:
    settings = ServingSettings(home=tmp_path / "home", bundle_dir=served, **kw)
    return ModelManager(settings, make_source(settings), Metrics())


def _corrupt(bundle: Path) -> Path:
    graph = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(graph[: len(graph) // 3])  # truncated copy
    return bundle


def test_refresh_swaps_in_a_new_bundle_and_refuses_a_corrupt_one(
    make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    served = tmp_path / "served"
    publish(make_bundle("1"), served)
    m = _manager(tmp_path, served)
    assert m.refresh()[0].action == "swapped"
    first = m.served
    assert first.champion is not None and first.champion.version == "1"
    assert m.refresh()[0].action == "unchanged"
    assert m.served is first  # nothing changed: not even a new object

    publish(_corrupt(make_bundle("2")), served)
    out = m.refresh()
    assert out[0].action == "refused" and "truncated or corrupt" in out[0].detail
    assert m.served is first  # the old one keeps serving
    assert m.describe()["refused"]["champion"]["reason"] == out[0].detail
    # The same refused content is not loaded again on every poll.
    assert m.refresh()[0].action == "still_refused"
    assert m.metrics is not None
    assert m.metrics.reloads.labels("champion", "refused")._value.get() == 1

    publish(make_bundle("3"), served)
    assert m.refresh()[0].action == "swapped"
    assert m.served.champion is not None and m.served.champion.version == "3"
    assert "champion" not in m.describe()["refused"]
    assert [h["action"] for h in m.describe()["history"]] == ["swapped", "refused", "swapped"]


def test_listeners_prepare_for_a_new_model_before_requests_can_see_it(
    make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    """The predictor builds its parser and prediction log in a listener: a request that meets
    the new model must find them ready, so a listener runs before the swap is published."""
    served = tmp_path / "served"
    publish(make_bundle("1"), served)
    m = _manager(tmp_path, served)
    seen: list[tuple[str | None, str | None]] = []

    def listener(new: Any) -> None:
        visible = m.served.champion
        seen.append((new.champion.version, visible.version if visible is not None else None))

    m.on_swap(listener)
    m.refresh()
    publish(make_bundle("2"), served)
    m.refresh()
    assert seen == [("1", None), ("2", "1")]
    assert m.served.champion is not None and m.served.champion.version == "2"


def test_a_new_champion_with_other_features_is_refused(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    from fraudops_serving.devtools import write_bundle

    served = tmp_path / "served"
    publish(make_bundle("1"), served)
    m = _manager(tmp_path, served)
    m.refresh()
    other = write_bundle(tmp_path / "other", [*NAMES[:-1], "new_feature"], version="2")
    publish(other, served)
    out = m.refresh()[0]
    assert (
        out.action == "refused" and "first differences: #127: bundle 'new_feature', served 'latent_v77'" in out.detail
    )
    assert m.served.champion is not None and m.served.champion.version == "1"


def test_pinned_schema_version_refuses_other_bundles(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    served = tmp_path / "served"
    publish(make_bundle("1", feature_schema_version="2.0.0"), served)
    m = _manager(tmp_path, served, feature_schema_version="1.0.0")
    assert m.refresh()[0].action == "refused"
    assert not m.ready and "feature schema 2.0.0" in m.not_ready_reason


def test_the_polling_thread_follows_the_directory(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    import time

    served = tmp_path / "served"
    publish(make_bundle("1"), served)
    m = _manager(tmp_path, served, poll_interval_s=0.1)
    m.start()
    try:
        deadline = time.monotonic() + 20
        while not m.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        publish(make_bundle("2"), served)
        while (m.served.champion is None or m.served.champion.version != "2") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.served.champion is not None and m.served.champion.version == "2"
    finally:
        m.stop()


async def _load_while_swapping(server: LiveServer, bundles: Callable[[str], Path], served: Path) -> dict[str, Any]:
    row = features(3)
    in_order = [row[n] for n in NAMES]
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    failures: list[str] = []
    stop = asyncio.Event()
    actions: list[tuple[str, int, str]] = []

    async def client_loop(i: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if n % 5 == 0:
                        r = await client.post(
                            "/predict/batch",
                            json={"transactions": [{"features": in_order, "card_id": k} for k in range(40)]},
                        )
                        got = {p["model_version"] for p in r.json()["predictions"]} if r.status_code == 200 else set()
                    else:
                        r = await client.post("/predict", json={"features": row, "card_id": i * 1000 + n})
                        got = {r.json()["model_version"]} if r.status_code == 200 else set()
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                statuses[r.status_code] += 1
                if r.status_code != 200:
                    failures.append(r.text)
                if len(got) > 1:
                    failures.append(f"one batch answered by several versions: {got}")
                for v in got:
                    versions[v] += 1

    async def swapper() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30.0, headers={"x-api-key": ADMIN_KEY}) as admin:
            await asyncio.sleep(0.5)
            for version in [str(v) for v in range(2, 8)] + ["corrupt"] + [str(v) for v in range(8, 14)]:
                publish(bundles(version), served)
                r = await admin.post("/admin/reload")
                action = r.json()["outcomes"][0]["action"]
                model = (await admin.get("/model")).json()
                actions.append((version, r.status_code, f"{action}:{model['champion']['model_version']}"))
                await asyncio.sleep(0.3)
        stop.set()

    await asyncio.wait_for(asyncio.gather(swapper(), *(client_loop(i) for i in range(6))), timeout=240)
    return {"statuses": statuses, "versions": versions, "failures": failures, "actions": actions}


@pytest.mark.slow
def test_zero_failed_requests_while_the_champion_is_swapped(
    make_bundle: Callable[..., Path], tmp_path: Path, live_server: Callable[..., LiveServer]
) -> None:
    served = tmp_path / "served"
    publish(make_bundle("1"), served)
    server = live_server(
        {
            "FRAUDOPS_SERVING_BUNDLE_DIR": str(served),
            "FRAUDOPS_SERVING_ADMIN_API_KEYS": ADMIN_KEY,
            "FRAUDOPS_SERVING_POLL_INTERVAL_S": "0.5",  # the poller races the admin endpoint: both must be safe
        }
    )

    def bundles(version: str) -> Path:
        if version == "corrupt":
            return _corrupt(make_bundle("99"))
        return make_bundle(version)

    result = asyncio.run(_load_while_swapping(server, bundles, served))
    assert result["failures"] == [], result["failures"][:5]
    assert set(result["statuses"]) == {200}
    served_versions = {v for v in result["versions"]}
    assert "99" not in served_versions
    # Every valid swap took effect (by the admin call or the poller that raced it) ...
    for version, status, outcome in result["actions"]:
        if version == "corrupt":
            assert status == 409 and outcome.split(":")[0] in ("refused", "still_refused") and outcome.endswith(":7")
        else:
            assert status == 200 and outcome.split(":")[1] == version, result["actions"]
    # ... and clients were answered by many of the versions while they were swapped.
    assert len(served_versions) >= 10, result["versions"]
    total = sum(result["statuses"].values())
    assert total > 200
    assert server.stopped_gracefully(), server.log()[-2000:]
    log = server.log()
    assert "refused" in log and "truncated or corrupt" in log
    shutil.rmtree(served)


def test_the_heap_is_settled_once_when_the_first_model_arrives_after_start_up(
    make_bundle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the first model and the prediction log bring in (ONNX Runtime sessions, PyArrow's
    Parquet writer) lives as long as the process: frozen out of the collector's sight once it
    is in, so that full collections do not scan it again while requests wait."""
    from fraudops_serving import app as app_module

    settled: list[str | None] = []
    served = tmp_path / "served"
    publish(make_bundle("1"), served)
    m = _manager(tmp_path, served)
    rt = app_module.Runtime(m.settings, m, Metrics())
    monkeypatch.setattr(app_module, "settle_heap", lambda: settled.append(rt.predlog and rt.predlog.root))
    rt.start()  # start-up first, as the app's lifespan does; the manager's thread loads later
    assert settled == []
    # A thread holding the interpreter (a flush between its C calls) delays the loop 1 ms at most.
    assert sys.getswitchinterval() == pytest.approx(0.001)
    m.refresh()
    assert settled == [rt.predlog.root if rt.predlog else None] and rt.predlog is not None  # log built first
    publish(make_bundle("2"), served)
    m.refresh()
    assert len(settled) == 1  # once
    rt.predlog.close(5)
