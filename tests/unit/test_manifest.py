"""The manifest and bundle loading: round trip, sha256, and refusal of bad bundles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fraudops import schema
from fraudops.export.bundle import BundleError, load_bundle, publish_bundle, write_bundle
from fraudops.export.manifest import Manifest, ManifestError, sha256_file


def _tiny_graph(path: Path, n_features: int = schema.N_FEATURES, batch: str | int = "batch") -> Path:
    """A real ONNX graph of the contract's shape: sigmoid(features @ w)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-0.01, 0.01, n_features, dtype=np.float32).reshape(-1, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["probability"])],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, n_features])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [batch, 1])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _manifest(sha: str, **overrides: object) -> Manifest:
    fields: dict[str, object] = {
        "model_name": "fraud-detector",
        "model_version": "3",
        "run_id": "abc123",
        "data_version": "d41d8cd98f00b204e9800998ecf8427e",
        "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
        "feature_names": schema.FEATURE_NAMES,
        "threshold": 0.83,
        "onnx_sha256": sha,
        "parity_max_abs_diff": 3e-7,
        "opset": 18,
        "metrics": {"test_auc_roc": 0.95},
    }
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    graph = _tiny_graph(tmp_path / "graph.onnx")
    return write_bundle(tmp_path / "bundle", graph, _manifest(sha256_file(graph)), {"format_version": 1})


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(3_000_000)
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_manifest_round_trip(tmp_path: Path) -> None:
    m = _manifest("a" * 64)
    path = m.write(tmp_path / "manifest.json")
    data = json.loads(path.read_text())
    # The contract's field names, as the predictor reads them.
    for key in (
        "format_version",
        "model_name",
        "model_version",
        "run_id",
        "data_version",
        "feature_schema_version",
        "feature_names",
        "threshold",
        "input_name",
        "output_name",
        "opset",
        "onnx_sha256",
        "parity_max_abs_diff",
        "created_at",
        "metrics",
    ):
        assert key in data, key
    assert data["input_name"] == "features" and data["output_name"] == "probability"
    assert data["created_at"].endswith("Z")
    back = Manifest.read(tmp_path)
    assert back == m
    assert back.feature_names == schema.FEATURE_NAMES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"onnx_sha256": "xyz"}, "onnx_sha256"),
        ({"opset": 13}, "opset"),
        ({"feature_names": ["a", "a"]}, "duplicates"),
        ({"format_version": 2}, "format_version"),
        ({"threshold": "0.5"}, "must be a number"),
    ],
)
def test_manifest_refuses_invalid_fields(change: dict[str, object], message: str) -> None:
    data = _manifest("b" * 64).to_dict()
    data.update(change)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data)


def test_manifest_missing_fields_and_bad_json(tmp_path: Path) -> None:
    data = _manifest("c" * 64).to_dict()
    del data["threshold"], data["run_id"]
    with pytest.raises(ManifestError, match=r"lacks field.*run_id.*threshold"):
        Manifest.from_dict(data)
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "model_na')
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.read(tmp_path)


def test_load_bundle_accepts_a_good_bundle(bundle: Path) -> None:
    b = load_bundle(bundle)
    assert b.manifest.threshold == pytest.approx(0.83)
    assert b.reference_profile == {"format_version": 1}
    x = np.ones((5, schema.N_FEATURES), dtype=np.float32)
    out = b.session().run(["probability"], {"features": x})[0]
    assert out.shape == (5, 1)


def test_truncated_onnx_is_refused(bundle: Path) -> None:
    model = bundle / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated or corrupt"):
        load_bundle(bundle)


def test_corrupt_onnx_with_matching_manifest_is_refused(bundle: Path) -> None:
    # Garbage whose sha256 the manifest records (e.g. corrupted before it was hashed):
    # ONNX Runtime itself must refuse it.
    model = bundle / "model.onnx"
    model.write_bytes(b"\x08\x07garbage" * 100)
    data = json.loads((bundle / "manifest.json").read_text())
    data["onnx_sha256"] = sha256_file(model)
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="not a valid ONNX graph"):
        load_bundle(bundle)


def test_wrong_schema_and_fixed_batch_are_refused(tmp_path: Path) -> None:
    graph = _tiny_graph(tmp_path / "g.onnx")
    other = write_bundle(tmp_path / "other", graph, _manifest(sha256_file(graph), feature_schema_version="0.9.0"), None)
    with pytest.raises(BundleError, match=r"feature schema 0\.9\.0"):
        load_bundle(other)
    renamed = list(schema.FEATURE_NAMES)
    renamed[1], renamed[2] = renamed[2], renamed[1]
    swapped = write_bundle(tmp_path / "swapped", graph, _manifest(sha256_file(graph), feature_names=renamed), None)
    with pytest.raises(BundleError, match="first differences: #1"):
        load_bundle(swapped)
    fixed = _tiny_graph(tmp_path / "fixed.onnx", batch=8)
    fixed_bundle = write_bundle(tmp_path / "fixed", fixed, _manifest(sha256_file(fixed)), None)
    with pytest.raises(BundleError, match="fixed batch size"):
        load_bundle(fixed_bundle)


def test_missing_files_are_refused(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(BundleError, match="no bundle directory"):
        load_bundle(tmp_path / "absent")
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest"):
        load_bundle(bundle)


def test_write_bundle_refuses_a_manifest_of_another_graph(tmp_path: Path) -> None:
    graph = _tiny_graph(tmp_path / "g.onnx")
    with pytest.raises(BundleError, match="does not describe"):
        write_bundle(tmp_path / "b", graph, _manifest("0" * 64), None)


def test_publish_replaces_and_refuses_bad_staging(tmp_path: Path, bundle: Path) -> None:
    dest = tmp_path / "bundles" / "fraud-detector" / "3"
    publish_bundle(bundle, dest)
    assert load_bundle(dest).manifest.model_version == "3"
    # A second, different bundle for the same version replaces the first as a whole.
    graph = _tiny_graph(tmp_path / "g2.onnx", n_features=schema.N_FEATURES)
    staging = write_bundle(tmp_path / "staging2", graph, _manifest(sha256_file(graph), threshold=0.5), None)
    publish_bundle(staging, dest)
    assert load_bundle(dest).manifest.threshold == 0.5
    assert not staging.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["3"]
    # A broken staging bundle is never published; the old one stays.
    broken = write_bundle(tmp_path / "broken", graph, _manifest(sha256_file(graph)), None)
    (broken / "model.onnx").write_bytes(b"")
    with pytest.raises(BundleError):
        publish_bundle(broken, dest)
    assert load_bundle(dest).manifest.threshold == 0.5
