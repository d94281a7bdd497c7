"""Bundles for tests, demos and benchmarks, built without any training code.

:func:`build_model` writes a real ONNX graph of the contract's shape and of the
production model's architecture (the baked-in scaling ``(x - mean) / std``, then
``Linear -> ReLU`` blocks and a sigmoid): input ``features`` float32 ``[batch, N]``,
output ``probability`` float32 ``[batch]``. :func:`write_bundle` adds the manifest and
a reference profile. Needs the ``onnx`` package (the ``dev`` extra), not the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fraudops_serving.bundle import MANIFEST_FILE, MODEL_FILE, PROFILE_FILE


def build_model(n_features: int, hidden: Sequence[int] = (256, 128), *, seed: int = 0, opset: int = 17) -> bytes:
    """The serialized ONNX graph of a random MLP with ``n_features`` inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=value.dtype), name))
        return name

    mean = rng.normal(0, 1, n_features).astype(np.float32)
    std = rng.uniform(0.5, 2.0, n_features).astype(np.float32)
    nodes.append(helper.make_node("Sub", ["features", const("mean", mean)], ["centered"]))
    nodes.append(helper.make_node("Div", ["centered", const("std", std)], ["scaled"]))
    width, current = n_features, "scaled"
    for i, h in enumerate(hidden):
        w = (rng.normal(0, 1, (width, h)) / np.sqrt(width)).astype(np.float32)
        b = (rng.normal(0, 0.1, h)).astype(np.float32)
        nodes.append(helper.make_node("MatMul", [current, const(f"w{i}", w)], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", const(f"b{i}", b)], [f"lin{i}"]))
        nodes.append(helper.make_node("Relu", [f"lin{i}"], [f"h{i}"]))
        width, current = h, f"h{i}"
    w_out = (rng.normal(0, 1, (width, 1)) / np.sqrt(width)).astype(np.float32)
    nodes.append(helper.make_node("MatMul", [current, const("w_out", w_out)], ["logit2d"]))
    nodes.append(helper.make_node("Add", ["logit2d", const("b_out", np.array([-2.0], dtype=np.float32))], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["prob2d"]))
    nodes.append(
        helper.make_node("Squeeze", ["prob2d", const("axis1", np.array([1], dtype=np.int64))], ["probability"])
    )
    graph = helper.make_graph(
        nodes,
        "fraud_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fraudops-devtools")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def reference_profile(feature_names: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """A minimal ``reference_profile.json`` (per-feature mean/std) for the fallback of online features."""
    rng = np.random.default_rng(seed + 1)
    return {
        "format_version": 1,
        "n_rows": 1000,
        "features": {n: {"mean": float(rng.uniform(0, 2)), "std": 1.0} for n in feature_names},
    }


def write_bundle(
    directory: str | Path,
    feature_names: Sequence[str],
    *,
    version: str = "1",
    model_name: str = "fraud-detector",
    threshold: float = 0.5,
    seed: int = 0,
    hidden: Sequence[int] = (256, 128),
    feature_schema_version: str = "1.0.0",
    model_bytes: bytes | None = None,
    profile: bool = True,
) -> Path:
    """Write a complete, valid bundle into ``directory`` (created) and return it."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    graph = model_bytes if model_bytes is not None else build_model(len(feature_names), hidden, seed=seed)
    (root / MODEL_FILE).write_bytes(graph)
    manifest = {
        "format_version": 1,
        "model_name": model_name,
        "model_version": str(version),
        "run_id": f"run-{version}-{seed}",
        "data_version": "0" * 32,
        "feature_schema_version": feature_schema_version,
        "feature_names": list(feature_names),
        "threshold": threshold,
        "input_name": "features",
        "output_name": "probability",
        "opset": 17,
        "onnx_sha256": hashlib.sha256(graph).hexdigest(),
        "parity_max_abs_diff": 0.0,
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": {"test_auc_roc": 0.9},
    }
    (root / MANIFEST_FILE).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    if profile:
        (root / PROFILE_FILE).write_bytes(orjson.dumps(reference_profile(feature_names, seed)))
    return root
