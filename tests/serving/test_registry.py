"""Bundles from a real MLflow registry (SQLite store): aliases, run artifacts, local copies, outages."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fraudops_serving.manager import ModelManager
from fraudops_serving.metrics import Metrics
from fraudops_serving.settings import ServingSettings
from fraudops_serving.sources import RegistrySource

from .conftest import free_port

MODEL = "fraud-detector"


class Registry:
    """A throwaway MLflow tracking + registry store with helpers to publish bundle versions."""

    def __init__(self, root: Path) -> None:
        from mlflow import MlflowClient

        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.experiment = self.client.create_experiment(
            "serving-tests", artifact_location=(root / "artifacts").as_uri()
        )
        self.client.create_registered_model(MODEL)

    def add_version(self, bundle: Path) -> str:
        run = self.client.create_run(self.experiment)
        self.client.log_artifacts(run.info.run_id, str(bundle), "bundle")
        self.client.set_terminated(run.info.run_id)
        mv = self.client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id)
        return str(mv.version)

    def alias(self, alias: str, version: str | None) -> None:
        if version is None:
            self.client.delete_registered_model_alias(MODEL, alias)
        else:
            self.client.set_registered_model_alias(MODEL, alias, version)


def _manager(home: Path, uri: str, **kw: Any) -> ModelManager:
    settings = ServingSettings(home=home, mlflow_tracking_uri=uri, **kw)
    return ModelManager(settings, RegistrySource(settings), Metrics())


@pytest.mark.slow
def test_champion_and_challenger_follow_the_registry_aliases(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    reg = Registry(tmp_path / "mlflow")
    v1 = reg.add_version(make_bundle("1"))
    v2 = reg.add_version(make_bundle("2"))
    v3 = reg.add_version(make_bundle("3"))
    reg.alias("champion", v1)
    home = tmp_path / "home"
    m = _manager(home, reg.uri)

    out = {o.alias: o for o in m.refresh()}
    assert out["champion"].action == "swapped" and out["challenger"].action == "unset"
    assert m.served.champion is not None and m.served.champion.version == "1"
    assert "from run" in m.served.champion.source  # downloaded from the run's bundle/ artifacts
    assert not list((home / "serving_cache").iterdir())  # the download is removed once loaded

    reg.alias("challenger", v2)
    out = {o.alias: o for o in m.refresh()}
    assert out["champion"].action == "unchanged" and out["challenger"].action == "swapped"
    assert m.served.challenger is not None and m.served.challenger.version == "2"

    # Promotion: champion -> 2, challenger removed.
    reg.alias("champion", v2)
    reg.alias("challenger", None)
    out = {o.alias: o for o in m.refresh()}
    assert out["champion"].action == "swapped" and out["challenger"].action == "removed"
    assert m.served.champion.version == "2"
    assert m.served.challenger is None

    # A local copy under bundles_dir is preferred to a download (here with another threshold to tell them apart).
    make_bundle("3", where=home / "bundles" / MODEL / "3", threshold=0.123)
    reg.alias("champion", v3)
    m.refresh()
    assert m.served.champion.version == "3" and m.served.champion.threshold == 0.123
    assert str(home / "bundles") in m.served.champion.source

    # A corrupt local copy: the run's artifacts are tried next, and they are good.
    reg.alias("champion", v1)
    m.refresh()
    local = make_bundle("3", where=home / "bundles" / MODEL / "3-corrupt", threshold=0.5)
    graph = (local / "model.onnx").read_bytes()
    (local / "model.onnx").write_bytes(graph[:100])
    shutil.rmtree(home / "bundles" / MODEL / "3")
    local.rename(home / "bundles" / MODEL / "3")
    reg.alias("champion", v3)
    out = {o.alias: o for o in m.refresh()}
    assert out["champion"].action == "swapped"
    assert (
        m.served.champion.version == "3"
        and m.served.champion.threshold == 0.5
        and "from run" in m.served.champion.source
    )

    # A version whose bundle is corrupt everywhere is refused; version 3 keeps serving.
    bad = make_bundle("4")
    (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes()[:100])
    v4 = reg.add_version(bad)
    reg.alias("champion", v4)
    out = {o.alias: o for o in m.refresh()}
    assert out["champion"].action == "refused" and "truncated or corrupt" in out["champion"].detail
    assert m.served.champion.version == "3"

    # Registry down later: keep serving what is loaded.
    m.source.tracking_uri = f"http://127.0.0.1:{free_port()}"  # type: ignore[attr-defined]
    m.source._client = None  # type: ignore[attr-defined]
    out = {o.alias: o for o in m.refresh()}
    assert out["champion"].action == "unavailable" and "unreachable" in out["champion"].detail
    assert m.ready and m.served.champion.version == "3"


@pytest.mark.slow
def test_registry_down_at_start_is_not_ready_says_why_and_retries(
    make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    # An HTTP tracking server that is not there: fails fast (no minutes of client retries).
    m = _manager(tmp_path / "home-http", f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    out = m.refresh()[0]
    assert time.monotonic() - t0 < 30
    assert out.action == "unavailable" and not m.ready
    assert "unreachable" in m.not_ready_reason and "127.0.0.1" in m.not_ready_reason

    # A store that does not exist yet; the retry loop picks it up once it does.
    root = tmp_path / "mlflow"
    root.mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    m = _manager(tmp_path / "home", uri, retry_initial_s=0.2, retry_max_s=0.5)
    m.start()
    try:
        time.sleep(0.5)
        assert not m.ready and "no MLflow store at" in m.not_ready_reason
        assert not (root / "mlflow.db").exists()  # the predictor never creates an empty store
        reg = Registry(root)
        deadline = time.monotonic() + 20
        while "not set" not in m.not_ready_reason and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not m.ready and f"alias 'champion' of model '{MODEL}' is not set" in m.not_ready_reason
        reg.alias("champion", reg.add_version(make_bundle("1")))
        while not m.ready and time.monotonic() < deadline:
            time.sleep(0.1)
        assert m.ready and m.served.champion is not None and m.served.champion.version == "1"
    finally:
        m.stop()
