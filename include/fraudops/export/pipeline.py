"""``fraudops export``: a registered model version -> a checked bundle.

1. Resolve the version (a number, an alias such as ``challenger``, or the newest).
2. Load the registered PyTorch model and the test split its training run logged.
3. Export to ONNX (scaling and sigmoid inside), ``onnx.checker`` and the contract checks.
4. Parity on the test split: the largest absolute difference of probabilities between
   PyTorch and ONNX Runtime, logged as ``parity_max_abs_diff`` on the run and as tags on
   the version. Above the tolerance the export stops here: no bundle is written or logged.
5. Bundle = ``model.onnx`` + ``manifest.json`` (+ ``reference_profile.json``), verified
   with :func:`load_bundle`, logged as ``bundle/`` of the version's run, then published
   atomically to ``settings.bundles_dir/<model>/<version>/``.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fraudops import schema
from fraudops.export.bundle import MODEL_FILE, load_bundle, publish_bundle, staging_dir_for, write_bundle
from fraudops.export.manifest import Manifest, sha256_file
from fraudops.export.onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    ExportError,
    ParityError,
    export_onnx,
    graph_opset,
    measure_parity,
)

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient

    from fraudops.settings import Settings

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_METRIC_KEYS = ("test_auc_roc", "test_pr_auc", "test_precision", "test_recall", "test_f1", "best_val_auc_roc")


@dataclass(slots=True)
class ExportOutcome:
    """What the export produced; ``summary()`` is the command's JSON output."""

    model_name: str
    model_version: str
    run_id: str
    parity_max_abs_diff: float
    parity_rows: int
    tolerance: float
    bundle_path: str
    bundle_artifact_uri: str
    onnx_sha256: str
    opset: int
    threshold: float
    metrics: dict[str, float] = field(default_factory=dict)
    reference_profile: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "parity_rows": self.parity_rows,
            "parity_tolerance": self.tolerance,
            "bundle_path": self.bundle_path,
            "bundle_artifact_uri": self.bundle_artifact_uri,
            "onnx_sha256": self.onnx_sha256,
            "opset": self.opset,
            "threshold": self.threshold,
            "metrics": self.metrics,
            "reference_profile": self.reference_profile,
        }


def bundle_dir(settings: Settings, model_name: str, version: str) -> Path:
    """Where the predictor reads version ``version`` of ``model_name``."""
    if not _SAFE_NAME.match(model_name):
        raise ValueError(f"model name {model_name!r} cannot be a directory name")
    return settings.bundles_dir / model_name / str(version)


def _download(client: MlflowClient, run_id: str, artifact: str, dst: Path) -> Path | None:
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, artifact, str(dst)))
    except (MlflowException, OSError) as exc:
        log.debug("artifact %s of run %s unavailable: %s", artifact, run_id, exc)
        return None


def build_and_publish(
    model: torch.nn.Module,
    X_parity: np.ndarray,
    *,
    destination: Path,
    manifest_fields: dict[str, Any],
    reference_profile: dict[str, Any] | None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
    reference_onnx: Path | None = None,
    on_parity: Any = None,
) -> tuple[Manifest, float, Path]:
    """Export ``model``, check parity on ``X_parity``, then write and publish the bundle.

    ``reference_onnx`` replaces the exported graph (for re-bundling a graph exported
    before); its parity against ``model`` is checked all the same. ``on_parity(diff,
    passed)`` is called before the verdict takes effect (to record it). Raises
    :class:`ParityError` above ``tolerance``, leaving ``destination`` as it was.
    Returns the manifest, the parity and the published directory.
    """
    with tempfile.TemporaryDirectory(prefix="fraudops-export-") as tmp:
        onnx_path = Path(tmp) / MODEL_FILE
        if reference_onnx is not None:
            onnx_path.write_bytes(Path(reference_onnx).read_bytes())
        else:
            export_onnx(
                model,
                onnx_path,
                n_features=X_parity.shape[1],
                opset=opset,
                metadata={
                    "model_name": str(manifest_fields.get("model_name", "")),
                    "model_version": str(manifest_fields.get("model_version", "")),
                    "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
                },
            )
        diff = measure_parity(model, onnx_path, X_parity)
        passed = diff <= tolerance
        log.info("parity on %s rows: max |diff| = %.3e (tolerance %.0e)", f"{X_parity.shape[0]:,}", diff, tolerance)
        if on_parity is not None:
            on_parity(diff, passed)
        if not passed:
            raise ParityError(diff, tolerance)
        manifest = Manifest(
            **manifest_fields,
            feature_names=schema.FEATURE_NAMES,
            feature_schema_version=schema.FEATURE_SCHEMA_VERSION,
            onnx_sha256=sha256_file(onnx_path),
            parity_max_abs_diff=diff,
            opset=graph_opset(onnx_path),
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
        )
        staging = staging_dir_for(destination)
        try:
            write_bundle(staging, onnx_path, manifest, reference_profile)
            published = publish_bundle(staging, destination)
        finally:
            if staging.exists():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)
    return manifest, diff, published


def export_model_version(
    ref: str | None = None,
    *,
    settings: Settings | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = DEFAULT_OPSET,
) -> ExportOutcome:
    """Export version ``ref`` of ``settings.model_name`` (number, alias, or None = newest) to a bundle."""
    import mlflow

    from fraudops.settings import get_settings
    from fraudops.training import tracking
    from fraudops.training.pipeline import REFERENCE_PROFILE_ARTIFACT, TEST_SPLIT_ARTIFACT

    cfg = settings or get_settings()
    if not 0 < tolerance < 1:
        raise ValueError(f"parity tolerance must be in (0, 1), got {tolerance}")
    client = tracking.configure(cfg)
    name = cfg.model_name
    version = tracking.resolve_version(client, name, ref)
    mv = client.get_model_version(name, version)
    run_id = mv.run_id
    if not run_id:
        raise LookupError(f"{name} version {version} has no training run; it was not registered by fraudops train")
    run = client.get_run(run_id)
    threshold_text = mv.tags.get("threshold") or run.data.params.get("decision_threshold")
    if threshold_text is None:
        raise LookupError(f"{name} version {version} carries no decision threshold (tag 'threshold')")
    threshold = float(threshold_text)
    destination = bundle_dir(cfg, name, version)

    model = mlflow.pytorch.load_model(f"models:/{name}/{version}", map_location="cpu")
    with tempfile.TemporaryDirectory(prefix="fraudops-artifacts-") as tmp:
        split_path = _download(client, run_id, TEST_SPLIT_ARTIFACT, Path(tmp))
        if split_path is None:
            raise LookupError(f"run {run_id} has no {TEST_SPLIT_ARTIFACT}: it cannot be checked for parity")
        with np.load(split_path) as npz:
            X_parity = np.asarray(npz["X"], dtype=np.float32)
        profile_path = _download(client, run_id, REFERENCE_PROFILE_ARTIFACT, Path(tmp))
        profile = json.loads(profile_path.read_text()) if profile_path is not None else None
    if X_parity.ndim != 2 or X_parity.shape[1] != schema.N_FEATURES:
        raise ExportError(f"the logged test split has shape {X_parity.shape}, the schema {schema.N_FEATURES} features")

    metrics = {k: float(run.data.metrics[k]) for k in _METRIC_KEYS if k in run.data.metrics}

    def record(diff: float, passed: bool) -> None:
        client.log_metric(run_id, "parity_max_abs_diff", diff)
        client.set_model_version_tag(name, version, "parity_max_abs_diff", repr(diff))
        client.set_model_version_tag(name, version, "parity_passed", str(passed).lower())
        client.set_model_version_tag(name, version, "parity_rows", str(X_parity.shape[0]))

    manifest, diff, published = build_and_publish(
        model,
        X_parity,
        destination=destination,
        manifest_fields={
            "model_name": name,
            "model_version": str(version),
            "run_id": run_id,
            "data_version": mv.tags.get("data_version") or run.data.tags.get("data_version", "unknown"),
            "threshold": threshold,
            "metrics": metrics,
        },
        reference_profile=profile,
        opset=opset,
        tolerance=tolerance,
        on_parity=record,
    )
    # The published copy is the one the predictor reads; log exactly those files.
    client.log_artifacts(run_id, str(published), "bundle")
    bundle_uri = f"runs:/{run_id}/bundle"
    client.set_model_version_tag(name, version, "onnx_sha256", manifest.onnx_sha256)
    client.set_model_version_tag(name, version, "bundle_uri", bundle_uri)
    client.set_model_version_tag(name, version, "bundle_path", str(published))
    load_bundle(published)
    log.info("bundle for %s version %s at %s", name, version, published)
    return ExportOutcome(
        model_name=name,
        model_version=str(version),
        run_id=run_id,
        parity_max_abs_diff=diff,
        parity_rows=int(X_parity.shape[0]),
        tolerance=tolerance,
        bundle_path=str(published),
        bundle_artifact_uri=bundle_uri,
        onnx_sha256=manifest.onnx_sha256,
        opset=manifest.opset,
        threshold=threshold,
        metrics=metrics,
        reference_profile=profile is not None,
    )
