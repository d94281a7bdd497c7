"""``fraudops train`` then ``fraudops export`` on the embedded default (SQLite MLflow store,
local artifacts), through the real CLI, and the guarantees of the bundle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fraudops import schema
from fraudops.data.generate import generate_transactions

pytestmark = pytest.mark.slow


@dataclass
class Trained:
    home: Path
    data: Path
    train: dict[str, Any]
    export: dict[str, Any]


def _invoke(args: list[str]) -> Any:
    from fraudops.cli.main import app

    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from fraudops.settings import get_settings

    root = tmp_path_factory.mktemp("lifecycle")
    home = root / "home"
    data = root / "train.parquet"
    pq.write_table(generate_transactions(60_000, seed=42), data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDOPS_HOME", str(home))
        mp.setenv("FRAUDOPS_PROFILE", "local")
        for var in ("FRAUDOPS_MLFLOW_TRACKING_URI", "FRAUDOPS_MLFLOW_ARTIFACT_ROOT", "FRAUDOPS_MODEL_NAME"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        res = _invoke(
            ["train", "--data", str(data), "--epochs", "3", "--data-version", "dvc-md5-0001",
             "--summary", str(root / "train.json")]
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        res = _invoke(["export", "--summary", str(root / "export.json")])
        assert res.exit_code == 0, res.output
        yield Trained(
            home=home,
            data=data,
            train=json.loads((root / "train.json").read_text()),
            export=json.loads((root / "export.json").read_text()),
        )
        get_settings.cache_clear()


def _client() -> Any:
    from fraudops.settings import get_settings
    from fraudops.training import tracking

    return tracking.configure(get_settings())


def test_train_summary_and_run_contents(trained: Trained) -> None:
    from fraudops.settings import get_settings

    s = trained.train
    assert s["model_name"] == "fraud-detector" and s["model_version"] == "1"
    assert s["data_version"] == "dvc-md5-0001"
    assert s["feature_schema_version"] == schema.FEATURE_SCHEMA_VERSION
    for key in ("test_auc_roc", "test_pr_auc", "test_precision", "test_recall", "test_f1"):
        assert 0.0 <= s["metrics"][key] <= 1.0
    assert 0.0 < s["threshold"] < 1.0
    assert s["reference_profile"] is True

    client = _client()
    cfg = get_settings()
    assert s["tracking_uri"] == cfg.tracking_uri and cfg.tracking_uri.startswith("sqlite:///")
    exp = client.get_experiment(s["experiment_id"])
    assert exp.artifact_location == cfg.artifact_root  # not ./mlruns of the cwd
    run = client.get_run(s["run_id"])
    params, tags = run.data.params, run.data.tags
    assert params["weight_decay"] == "0.0001" and params["optimizer"] == "AdamW"
    assert float(params["decision_threshold"]) == pytest.approx(s["threshold"])
    assert tags["data_version"] == "dvc-md5-0001"
    assert tags["feature_schema_version"] == schema.FEATURE_SCHEMA_VERSION
    assert tags["git_commit"] and "version.torch" in tags and "version.mlflow" in tags
    # Per-epoch curves, one point per epoch run.
    for metric in ("train_loss", "val_auc_roc", "val_pr_auc", "val_precision", "val_recall", "val_f1", "learning_rate"):
        history = client.get_metric_history(s["run_id"], metric)
        assert sorted(m.step for m in history) == list(range(1, s["epochs_run"] + 1)), metric
    assert run.data.metrics["test_auc_roc"] == pytest.approx(s["metrics"]["test_auc_roc"], abs=1e-6)

    names = {a.path for a in client.list_artifacts(s["run_id"], "plots")}
    assert names == {
        "plots/roc_test.png",
        "plots/pr_test.png",
        "plots/confusion_test.png",
        "plots/loss_curves.png",
    }
    top = {a.path for a in client.list_artifacts(s["run_id"])}
    assert {"eval", "preprocessing", "reference_profile.json", "bundle"} <= top

    mv = client.get_model_version("fraud-detector", "1")
    for key in ("run_id", "data_version", "feature_schema_version", "git_commit", "threshold", "test_auc_roc"):
        assert key in mv.tags, key
    assert mv.tags["run_id"] == s["run_id"]
    assert float(mv.tags["test_auc_roc"]) == pytest.approx(s["metrics"]["test_auc_roc"], abs=1e-9)
    assert not mv.aliases  # registering only; aliases belong to the promotion gate


def test_logged_model_has_signature_and_predicts(trained: Trained) -> None:
    import mlflow

    info = mlflow.models.get_model_info("models:/fraud-detector/1")
    assert info.signature is not None
    inputs = info.signature.inputs.to_dict()
    assert list(inputs[0]["tensor-spec"]["shape"]) == [-1, schema.N_FEATURES]
    model = mlflow.pyfunc.load_model("models:/fraud-detector/1")
    x = np.zeros((3, schema.N_FEATURES), dtype=np.float32)
    out = np.asarray(model.predict(x)).reshape(-1)
    assert out.shape == (3,) and np.all((out >= 0) & (out <= 1))


def test_bundle_is_published_checked_and_logged(trained: Trained) -> None:
    from fraudops.export.bundle import load_bundle
    from fraudops.export.onnx_export import onnx_predict
    from fraudops.training.evaluate import auc_roc

    e = trained.export
    bundle_path = trained.home / "bundles" / "fraud-detector" / "1"
    assert Path(e["bundle_path"]) == bundle_path
    bundle = load_bundle(bundle_path)
    m = bundle.manifest
    assert (m.model_name, m.model_version, m.run_id) == ("fraud-detector", "1", trained.train["run_id"])
    assert m.data_version == "dvc-md5-0001"
    assert m.threshold == pytest.approx(trained.train["threshold"])
    assert m.opset >= 17 and m.parity_max_abs_diff <= 1e-5
    assert m.metrics["test_auc_roc"] == pytest.approx(trained.train["metrics"]["test_auc_roc"], abs=1e-6)
    assert bundle.reference_profile is not None
    assert bundle.reference_profile["feature_schema_version"] == schema.FEATURE_SCHEMA_VERSION

    client = _client()
    run_id = trained.train["run_id"]
    run = client.get_run(run_id)
    assert run.data.metrics["parity_max_abs_diff"] == pytest.approx(e["parity_max_abs_diff"])
    logged = {a.path for a in client.list_artifacts(run_id, "bundle")}
    assert logged == {"bundle/model.onnx", "bundle/manifest.json", "bundle/reference_profile.json"}
    mv = client.get_model_version("fraud-detector", "1")
    assert mv.tags["parity_passed"] == "true" and mv.tags["onnx_sha256"] == m.onnx_sha256

    # The ONNX graph on the raw test split reaches the AUC the training run reported.
    with np.load(client.download_artifacts(run_id, "eval/test_split.npz", str(trained.home))) as npz:
        X, y = npz["X"], npz["y"]
    p = onnx_predict(bundle.model_path, X)
    assert auc_roc(y, p) == pytest.approx(trained.train["metrics"]["test_auc_roc"], abs=1e-4)


def test_export_by_alias_and_unknown_version(trained: Trained) -> None:
    from fraudops.settings import get_settings

    client = _client()
    client.set_registered_model_alias("fraud-detector", "challenger", "1")
    try:
        res = _invoke(["export", "--model-version", "challenger", "--summary", str(trained.home / "alias.json")])
        assert res.exit_code == 0, res.output
        assert json.loads((trained.home / "alias.json").read_text())["model_version"] == "1"
    finally:
        client.delete_registered_model_alias("fraud-detector", "challenger")
    res = _invoke(["export", "--model-version", "42"])
    assert res.exit_code == 1 and "no version 42" in res.output
    assert not (get_settings().bundles_dir / "fraud-detector" / "42").exists()


def test_failed_parity_blocks_the_bundle(trained: Trained, tmp_path: Path) -> None:
    import mlflow
    import torch

    from fraudops.export.bundle import load_bundle
    from fraudops.export.onnx_export import ParityError
    from fraudops.export.pipeline import build_and_publish

    published = trained.home / "bundles" / "fraud-detector" / "1"
    before = {p.name: p.read_bytes() for p in published.iterdir()}
    model = mlflow.pytorch.load_model("models:/fraud-detector/1", map_location="cpu")
    X = np.random.default_rng(0).normal(size=(256, schema.N_FEATURES)).astype(np.float32)
    # A graph that is not this model's (the published graph of a model whose weights
    # then changed): parity must catch it and nothing may be written.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight"):
                param.mul_(1.5)
                break
    fields = {
        "model_name": "fraud-detector",
        "model_version": "1",
        "run_id": "r",
        "data_version": "d",
        "threshold": 0.5,
    }
    with pytest.raises(ParityError, match="parity failed"):
        build_and_publish(
            model,
            X,
            destination=published,
            manifest_fields=fields,
            reference_profile=None,
            reference_onnx=published / "model.onnx",
        )
    assert {p.name: p.read_bytes() for p in published.iterdir()} == before
    fresh = tmp_path / "bundles" / "fraud-detector" / "9"
    with pytest.raises(ParityError):
        build_and_publish(
            model, X, destination=fresh, manifest_fields=fields, reference_profile=None,
            reference_onnx=published / "model.onnx",
        )  # fmt: skip
    assert not fresh.exists()
    assert not fresh.parent.exists() or not any(fresh.parent.iterdir())
    load_bundle(published)


def test_corrupt_or_truncated_exported_graph_is_refused(trained: Trained, tmp_path: Path) -> None:
    import shutil

    from fraudops.export.bundle import BundleError, load_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(trained.home / "bundles" / "fraud-detector" / "1", copy)
    model = copy / "model.onnx"
    original = model.read_bytes()
    model.write_bytes(original[:-100])
    with pytest.raises(BundleError, match="truncated or corrupt"):
        load_bundle(copy)
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    model.write_bytes(bytes(flipped))
    with pytest.raises(BundleError, match="truncated or corrupt"):
        load_bundle(copy)


def test_bad_training_data_fails_cleanly_and_registers_nothing(trained: Trained, tmp_path: Path) -> None:
    table = pq.read_table(trained.data).drop_columns(["amount"])
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad)
    res = _invoke(["train", "--data", str(bad), "--epochs", "1"])
    assert res.exit_code == 1
    assert "lacks 1 column" in res.output and "amount" in res.output
    versions = _client().search_model_versions("name = 'fraud-detector'")
    assert [str(v.version) for v in versions] == ["1"]
