"""One training run, end to end: data -> model -> evaluation -> MLflow -> registry.

This is what ``fraudops train`` runs, on a laptop or in the training pod. Everything
the run produced is in MLflow: parameters, per-epoch curves, test metrics, plots, the
model (with its signature and an input example), the fitted scaling, the test split the
export checks parity on, and the drift reference profile. The model is then registered
as a new version with its lineage as tags; nothing else in the registry changes (alias
moves belong to the promotion gate). A run that fails is marked FAILED and registers
nothing.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fraudops import schema
from fraudops.training.config import TrainConfig
from fraudops.training.data import Split, data_fingerprint, load_training_set, split_by_time

if TYPE_CHECKING:
    from fraudops.settings import Settings
    from fraudops.training.loop import FitResult
    from fraudops.training.model import FraudMLP

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
TEST_SPLIT_ARTIFACT = "eval/test_split.npz"
SCALER_ARTIFACT = "preprocessing/scaler.json"
REFERENCE_PROFILE_ARTIFACT = "reference_profile.json"
# The export measures parity on the test split; beyond this many rows (a sample, by seed)
# the maximum difference no longer moves while the artifact keeps growing.
PARITY_MAX_ROWS = 100_000
TEST_METRICS = ("test_auc_roc", "test_pr_auc", "test_precision", "test_recall", "test_f1")


@dataclass(slots=True)
class TrainOutcome:
    """What a training run produced; ``summary()`` is the command's JSON output."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    model_name: str
    model_version: str | None
    model_uri: str
    threshold: float
    threshold_strategy: str
    data_version: str
    feature_schema_version: str
    git_commit: str
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    device: str = "cpu"
    mixed_precision: str = "no"
    train_seconds: float = 0.0
    reference_profile: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.tracking_uri,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_uri": self.model_uri,
            "threshold": self.threshold,
            "threshold_strategy": self.threshold_strategy,
            "data_version": self.data_version,
            "feature_schema_version": self.feature_schema_version,
            "git_commit": self.git_commit,
            "metrics": self.metrics,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "device": self.device,
            "mixed_precision": self.mixed_precision,
            "train_seconds": round(self.train_seconds, 3),
            "reference_profile": self.reference_profile,
        }


def build_profile(model: FraudMLP, train: Split) -> dict[str, Any] | None:
    """The drift reference profile of the training split (features, scores, labels).

    Built by :func:`fraudops.monitoring.profile.build_reference_profile`; ``None`` (with a
    warning) when that module is not installed in this image.
    """
    try:
        from fraudops.monitoring.profile import build_reference_profile
    except ImportError as exc:
        log.warning("no drift reference profile: fraudops.monitoring.profile is unavailable (%s)", exc)
        return None
    from fraudops.training.loop import logits_of, sigmoid

    scores = sigmoid(logits_of(model, train.X))
    profile: dict[str, Any] = build_reference_profile(train.X, list(schema.FEATURE_NAMES), scores, train.y)
    return profile


def _test_split_bytes(test: Split, seed: int) -> tuple[bytes, int]:
    X, y = test.X, test.y
    if test.n_rows > PARITY_MAX_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(test.n_rows, PARITY_MAX_ROWS, replace=False))
        X, y = X[keep], y[keep]
    buf = io.BytesIO()
    np.savez_compressed(buf, X=X.astype(np.float32), y=y.astype(np.int8))
    return buf.getvalue(), int(X.shape[0])


def _pip_requirements(versions: dict[str, str]) -> list[str]:
    """What loading the logged model needs: torch (a pt2 program), numpy and mlflow."""
    pins = []
    for name in ("torch", "numpy", "mlflow"):
        ver = versions.get(name, "absent")
        # A local label (+cpu, +cu124) is not installable from PyPI; the release is.
        pins.append(name if ver == "absent" else f"{name}=={ver.split('+')[0]}")
    return pins


def _lineage_tags(
    *,
    run_id: str,
    data_version: str,
    commit: str,
    dirty: bool,
    threshold: float,
    strategy: str,
    metrics: dict[str, float],
    config: TrainConfig,
    validation_report: str | None,
) -> dict[str, Any]:
    tags: dict[str, Any] = {
        "run_id": run_id,
        "data_version": data_version,
        "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
        "n_features": schema.N_FEATURES,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "threshold": repr(float(threshold)),
        "threshold_strategy": strategy,
        "hyperparameters": json.dumps(config.params(), sort_keys=True, default=str),
    }
    for key in (*TEST_METRICS, "best_val_auc_roc"):
        if key in metrics:
            tags[key] = repr(float(metrics[key]))
    if validation_report:
        tags["validation_report"] = validation_report
    return tags


def train_model(
    data_path: str | Path,
    *,
    config: TrainConfig | None = None,
    settings: Settings | None = None,
    data_version: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    register: bool = True,
    validation_report: str | None = None,
    min_rows: int = 1_000,
) -> TrainOutcome | None:
    """Train, evaluate, log and register one model. Returns ``None`` on non-main processes.

    Raises :class:`fraudops.training.data.TrainingDataError` for an unusable training set
    before anything is logged.
    """
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from fraudops.settings import get_settings
    from fraudops.training import plots, tracking
    from fraudops.training.evaluate import binary_metrics, tune_threshold
    from fraudops.training.loop import fit, logits_of, make_accelerator, sigmoid
    from fraudops.training.model import FraudProbability

    cfg = settings or get_settings()
    config = config or TrainConfig(seed=cfg.seed)
    data = load_training_set(data_path, min_rows=min_rows)
    splits = split_by_time(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    version = data_version or data_fingerprint(data_path)

    accelerator = make_accelerator(config.mixed_precision)
    if not accelerator.is_main_process:
        # Other processes train their share and leave tracking to the main one.
        fit(config, splits.train, splits.val, accelerator=accelerator)
        return None

    client = tracking.configure(cfg)
    exp_id = tracking.ensure_experiment(client, experiment or tracking.DEFAULT_EXPERIMENT, cfg.artifact_root)
    commit, dirty = tracking.git_commit()
    versions = tracking.package_versions()

    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.set_tags(
            {
                "data_version": version,
                "data_path": str(data_path),
                "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
                "git_commit": commit,
                "git_dirty": str(dirty).lower(),
                "mlflow.source.git.commit": commit,
                "model_name": cfg.model_name,
                "profile": cfg.profile,
                **{f"version.{k}": v for k, v in versions.items()},
                **({"validation_report": validation_report} if validation_report else {}),
            }
        )
        mlflow.log_params(
            {
                **config.params(),
                **splits.describe(),
                "n_features": schema.N_FEATURES,
                "data_version": version,
                "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
            }
        )

        def _log_epoch(stats: Any) -> None:
            mlflow.log_metrics(stats.metrics(), step=stats.epoch)

        result: FitResult = fit(config, splits.train, splits.val, accelerator=accelerator, on_epoch=_log_epoch)
        model = result.model
        mlflow.log_params(
            {
                "pos_weight": round(result.pos_weight, 6),
                "device": result.device,
                "resolved_mixed_precision": result.mixed_precision,
                "num_processes": result.num_processes,
            }
        )

        # Threshold on validation, evaluation on test: the test split decides nothing.
        val_p = sigmoid(logits_of(model, splits.val.X))
        choice = tune_threshold(splits.val.y, val_p, min_precision=config.min_precision)
        val_m = binary_metrics(splits.val.y, val_p, choice.threshold)
        test_p = sigmoid(logits_of(model, splits.test.X))
        test_m = binary_metrics(splits.test.y, test_p, choice.threshold)
        metrics = {f"test_{k}": v for k, v in test_m.items()}
        metrics.update(
            {
                "best_val_auc_roc": val_m["auc_roc"],
                "best_val_pr_auc": val_m["pr_auc"],
                "best_val_precision": val_m["precision"],
                "best_val_recall": val_m["recall"],
                "best_val_f1": val_m["f1"],
                "decision_threshold": choice.threshold,
                "best_epoch": float(result.best_epoch),
                "epochs_run": float(len(result.history)),
                "train_seconds": result.train_seconds,
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_params({"decision_threshold": choice.threshold, "threshold_strategy": choice.strategy})
        mlflow.set_tag("decision_threshold", repr(choice.threshold))

        mlflow.log_figure(plots.roc_figure(splits.test.y, test_p, test_m["auc_roc"]), "plots/roc_test.png")
        mlflow.log_figure(
            plots.pr_figure(splits.test.y, test_p, test_m["pr_auc"], choice.threshold), "plots/pr_test.png"
        )
        mlflow.log_figure(plots.confusion_figure(splits.test.y, test_p, choice.threshold), "plots/confusion_test.png")
        mlflow.log_figure(plots.loss_figure(result.history), "plots/loss_curves.png")
        mlflow.log_dict(result.scaler.to_dict(), SCALER_ARTIFACT)
        mlflow.log_dict(
            {
                "threshold": choice.threshold,
                "threshold_strategy": choice.strategy,
                "validation": val_m,
                "test": test_m,
                "history": [h.metrics() | {"epoch": h.epoch} for h in result.history],
            },
            "eval/metrics.json",
        )
        with tempfile.TemporaryDirectory() as tmp:
            payload, n_parity = _test_split_bytes(splits.test, config.seed)
            (Path(tmp) / "test_split.npz").write_bytes(payload)
            mlflow.log_artifact(str(Path(tmp) / "test_split.npz"), "eval")
        mlflow.log_param("parity_rows", n_parity)

        profile = build_profile(model, splits.train)
        if profile is not None:
            mlflow.log_dict(profile, REFERENCE_PROFILE_ARTIFACT)
        mlflow.set_tag("reference_profile", "logged" if profile is not None else "missing")

        serving = FraudProbability(model).eval()
        example = np.ascontiguousarray(splits.train.X[:8], dtype=np.float32)
        signature = infer_signature(example, serving(torch.from_numpy(example)).detach().numpy())
        info = mlflow.pytorch.log_model(
            serving,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            serialization_format="pt2",
            # Given, not inferred: inference re-imports the model in a subprocess (~15 s).
            pip_requirements=_pip_requirements(versions),
            params={"threshold": choice.threshold},
        )

        model_version: str | None = None
        if register:
            tags = _lineage_tags(
                run_id=run_id,
                data_version=version,
                commit=commit,
                dirty=dirty,
                threshold=choice.threshold,
                strategy=choice.strategy,
                metrics=metrics,
                config=config,
                validation_report=validation_report,
            )
            model_version = tracking.register_version(
                info.model_uri,
                cfg.model_name,
                tags,
                description=(
                    f"test AUC-ROC {test_m['auc_roc']:.4f}, PR-AUC {test_m['pr_auc']:.4f}; "
                    f"threshold {choice.threshold:.4f} ({choice.strategy}); data {version}"
                ),
            )
            mlflow.set_tag("registered_version", model_version)
            log.info("registered %s version %s", cfg.model_name, model_version)

    return TrainOutcome(
        run_id=run_id,
        experiment_id=exp_id,
        tracking_uri=cfg.tracking_uri,
        model_name=cfg.model_name,
        model_version=model_version,
        model_uri=f"models:/{cfg.model_name}/{model_version}" if model_version else info.model_uri,
        threshold=choice.threshold,
        threshold_strategy=choice.strategy,
        data_version=version,
        feature_schema_version=schema.FEATURE_SCHEMA_VERSION,
        git_commit=commit,
        metrics={k: float(v) for k, v in metrics.items()},
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        device=result.device,
        mixed_precision=result.mixed_precision,
        train_seconds=result.train_seconds,
        reference_profile=profile is not None,
    )
