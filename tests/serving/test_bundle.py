"""Bundle checks before serving: manifest, sha256, feature schema, graph shape, smoke batch."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from fraudops import schema
from fraudops_serving.bundle import BundleError, fingerprint, load_bundle
from fraudops_serving.devtools import build_model

from .conftest import NAMES


def _edit_manifest(bundle: Path, **changes: object) -> None:
    path = bundle / "manifest.json"
    data = orjson.loads(path.read_bytes())
    data.update(changes)
    path.write_bytes(orjson.dumps(data))


def test_a_valid_bundle_loads_and_scores_like_onnx_runtime(make_bundle: Callable[..., Path]) -> None:
    import onnxruntime as ort

    bundle = make_bundle("7", threshold=0.3)
    model = load_bundle(
        bundle, feature_schema_version=schema.FEATURE_SCHEMA_VERSION, feature_names=schema.FEATURE_NAMES
    )
    assert (model.name, model.version, model.threshold, model.n_features) == (
        "fraud-detector",
        "7",
        0.3,
        schema.N_FEATURES,
    )
    x = np.random.default_rng(0).normal(0, 1, (5, schema.N_FEATURES)).astype(np.float32)
    raw = ort.InferenceSession(str(bundle / "model.onnx")).run(None, {"features": x})[0].reshape(-1)
    np.testing.assert_allclose(model.predict(x), raw, rtol=1e-6)
    for i in range(5):  # the single-row path (I/O binding on the reused buffer) agrees
        model.buffer[0] = x[i]
        assert model.predict_one() == pytest.approx(float(raw[i]), rel=1e-6)
    assert model.reference_means() is not None


def test_truncated_graph_is_refused_by_sha256(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("1")
    graph = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(graph[: len(graph) // 2])
    with pytest.raises(BundleError, match=r"does not match its manifest.*truncated or corrupt"):
        load_bundle(bundle)


def test_garbage_graph_with_matching_sha256_is_refused_by_onnx_runtime(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("1")
    garbage = b"this is not an onnx graph" * 100
    (bundle / "model.onnx").write_bytes(garbage)
    _edit_manifest(bundle, onnx_sha256=hashlib.sha256(garbage).hexdigest())
    with pytest.raises(BundleError, match="ONNX Runtime cannot open the graph"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 2}, "unsupported format_version"),
        ({"threshold": 1.5}, "threshold must be a probability"),
        ({"threshold": "0.5"}, "threshold must be a probability"),
        ({"onnx_sha256": "abc"}, "onnx_sha256 must be 64"),
        ({"opset": 13}, "opset must be an integer >= 17"),
        ({"feature_names": []}, "feature_names must be a non-empty list"),
        ({"model_version": ""}, "model_version must be a non-empty string"),
    ],
)
def test_manifest_that_breaks_the_contract_is_refused(
    make_bundle: Callable[..., Path], changes: dict[str, object], message: str
) -> None:
    bundle = make_bundle("1")
    _edit_manifest(bundle, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_missing_and_unreadable_manifest(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = make_bundle("1")
    (bundle / "manifest.json").write_text('{"format_version": 1, "model_na')
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle)
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match="no bundle directory"):
        load_bundle(tmp_path / "nowhere")
    data = orjson.loads(orjson.dumps({"format_version": 1, "model_name": "m"}))
    (bundle / "manifest.json").write_bytes(orjson.dumps(data))
    with pytest.raises(BundleError, match="missing field"):
        load_bundle(bundle)


def test_other_feature_schema_is_refused(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("1", feature_schema_version="2.0.0")
    with pytest.raises(BundleError, match=r"feature schema 2\.0\.0, this predictor serves 1\.0\.0"):
        load_bundle(bundle, feature_schema_version="1.0.0")
    with pytest.raises(BundleError, match=r"first differences: #0: bundle 'amount', served 'zzz'"):
        load_bundle(make_bundle("2"), feature_names=("zzz", *NAMES[1:]))


def test_graph_that_does_not_fit_the_manifest_is_refused(make_bundle: Callable[..., Path]) -> None:
    # A graph with one input fewer than the manifest lists.
    graph = build_model(len(NAMES) - 1)
    bundle = make_bundle("1", model_bytes=graph)
    with pytest.raises(BundleError, match=r"graph input shape \['batch', 127\] is not \[batch, 128\]"):
        load_bundle(bundle)
    bundle = make_bundle("2")
    _edit_manifest(bundle, input_name="x")
    with pytest.raises(BundleError, match="graph inputs \\['features'\\] != manifest input 'x'"):
        load_bundle(bundle)


def test_fingerprint_changes_when_a_bundle_is_replaced(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    from .conftest import publish

    dst = tmp_path / "served"
    publish(make_bundle("1"), dst)
    first = fingerprint(dst)
    assert fingerprint(dst) == first
    publish(make_bundle("2"), dst)
    assert fingerprint(dst) != first
    assert fingerprint(tmp_path / "nowhere").startswith("unreadable:")
