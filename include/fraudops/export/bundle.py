"""Model bundles on disk: write, publish atomically, and load with every check.

A bundle is a directory with ``model.onnx``, ``manifest.json`` and (when the training
run had one) ``reference_profile.json``. :func:`load_bundle` is what a predictor calls
before it serves a bundle: it refuses a bundle whose graph does not match the manifest's
SHA-256 (truncated or corrupt copy), whose feature schema is not the one this build
serves, or whose graph ONNX Runtime cannot open or whose inputs and outputs are not
those of the contract. Standard library plus ONNX Runtime only (no PyTorch, no pandas).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudops import schema
from fraudops.export.manifest import Manifest, ManifestError, sha256_file

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
PROFILE_FILE = "reference_profile.json"


class BundleError(ValueError):
    """A bundle that must not be served; the message says why."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A checked bundle."""

    path: Path
    manifest: Manifest
    reference_profile: dict[str, Any] | None

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def session(self, providers: list[str] | None = None) -> ort.InferenceSession:
        """An ONNX Runtime session on the graph (CPU unless ``providers`` say otherwise)."""
        return _open_session(self.model_path, providers)


def _open_session(model_path: Path, providers: list[str] | None = None) -> ort.InferenceSession:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: a refused graph is reported by us
    try:
        return ort.InferenceSession(str(model_path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise BundleError(f"{model_path} is not a valid ONNX graph ONNX Runtime can open: {exc}") from exc


def load_bundle(
    path: str | Path,
    *,
    feature_schema_version: str = schema.FEATURE_SCHEMA_VERSION,
    feature_names: tuple[str, ...] = schema.FEATURE_NAMES,
    check_graph: bool = True,
) -> Bundle:
    """Load and verify the bundle in directory ``path``.

    Checks, in order: the files exist; the manifest parses and follows the contract;
    the schema version and the feature names/order are the ones this build serves;
    the SHA-256 of ``model.onnx`` equals the manifest's; and (``check_graph``) ONNX
    Runtime opens the graph, whose input and output names and feature count match.
    Raises :class:`BundleError` with the reason.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"no bundle directory at {root}")
    model_path = root / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(f"bundle {root} has no {MODEL_FILE}")
    try:
        manifest = Manifest.read(root / MANIFEST_FILE)
    except ManifestError as exc:
        raise BundleError(f"bundle {root}: {exc}") from exc

    if manifest.feature_schema_version != feature_schema_version:
        raise BundleError(
            f"bundle {root} was trained on feature schema {manifest.feature_schema_version}; "
            f"this build serves {feature_schema_version}"
        )
    if tuple(manifest.feature_names) != tuple(feature_names):
        diff = [
            f"#{i}: {a!r} != {b!r}"
            for i, (a, b) in enumerate(zip(manifest.feature_names, feature_names, strict=False))
            if a != b
        ]
        raise BundleError(
            f"bundle {root} lists {manifest.n_features} features, this build {len(feature_names)}; "
            f"first differences: {', '.join(diff[:3]) or 'lengths differ'}"
        )

    actual = sha256_file(model_path)
    if actual != manifest.onnx_sha256:
        raise BundleError(
            f"{model_path} does not match its manifest (sha256 {actual[:16]}..., expected "
            f"{manifest.onnx_sha256[:16]}..., {model_path.stat().st_size:,} bytes): truncated or corrupt; "
            "re-export the bundle"
        )

    if check_graph:
        sess = _open_session(model_path)
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if [i.name for i in inputs] != [manifest.input_name]:
            raise BundleError(f"graph inputs {[i.name for i in inputs]} != manifest input {manifest.input_name!r}")
        if manifest.output_name not in [o.name for o in outputs]:
            raise BundleError(f"graph outputs {[o.name for o in outputs]} lack {manifest.output_name!r}")
        shape = inputs[0].shape
        if len(shape) != 2 or shape[1] != manifest.n_features:
            raise BundleError(f"graph input shape {shape} is not [batch, {manifest.n_features}]")
        if isinstance(shape[0], int):
            raise BundleError(f"graph input has a fixed batch size {shape[0]}; the contract needs a dynamic axis")

    profile: dict[str, Any] | None = None
    profile_path = root / PROFILE_FILE
    if profile_path.exists():
        try:
            profile = json.loads(profile_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{profile_path} is unreadable: {exc}") from exc
    return Bundle(path=root, manifest=manifest, reference_profile=profile)


def write_bundle(
    directory: str | Path,
    onnx_path: str | Path,
    manifest: Manifest,
    reference_profile: dict[str, Any] | None = None,
) -> Path:
    """Assemble a bundle in ``directory`` (created; must be empty or absent)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"bundle directory {root} is not empty")
    if sha256_file(onnx_path) != manifest.onnx_sha256:
        raise BundleError("the manifest's onnx_sha256 does not describe the graph being bundled")
    shutil.copyfile(onnx_path, root / MODEL_FILE)
    manifest.write(root / MANIFEST_FILE)
    if reference_profile is not None:
        (root / PROFILE_FILE).write_text(json.dumps(reference_profile, sort_keys=True) + "\n", encoding="utf-8")
    return root


def publish_bundle(staging: str | Path, destination: str | Path) -> Path:
    """Move a checked bundle from ``staging`` to ``destination``, replacing it atomically.

    A reader sees the old bundle or the new one, never a half-written directory (when
    re-publishing a version, the path is absent for the instant between two renames).
    ``staging`` must be on the same filesystem (a sibling of ``destination`` is).
    """
    src, dst = Path(staging), Path(destination)
    load_bundle(src)  # never publish what a predictor would refuse
    dst.parent.mkdir(parents=True, exist_ok=True)
    old: Path | None = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def staging_dir_for(destination: str | Path) -> Path:
    """A fresh hidden sibling of ``destination`` to assemble a bundle in."""
    dst = Path(destination)
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst.with_name(f".{dst.name}.staging-{uuid.uuid4().hex[:8]}")
