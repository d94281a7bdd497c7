"""``fraudops train`` and ``fraudops export``: the model half of the lifecycle.

Every option can also come from the environment (``FRAUDOPS_TRAIN_*``, shown in
``--help``), so the training pod runs the same command with its configuration in env.
Under several GPUs: ``accelerate launch $(which fraudops) train --data ...``.
"""

from __future__ import annotations

import typer

from fraudops.cli._common import console, emit_json, fail, settings


def train(
    data: str = typer.Option(..., "--data", envvar="FRAUDOPS_TRAIN_DATA", help="Training-set Parquet (file or dir)."),
    data_version: str | None = typer.Option(
        None, envvar="FRAUDOPS_DATA_VERSION", help="Data version (the DVC hash); default: MD5 of the file."
    ),
    epochs: int = typer.Option(15, envvar="FRAUDOPS_TRAIN_EPOCHS", help="Maximum epochs."),
    batch_size: int = typer.Option(1024, envvar="FRAUDOPS_TRAIN_BATCH_SIZE", help="Rows per step."),
    lr: float = typer.Option(2e-3, "--lr", envvar="FRAUDOPS_TRAIN_LR", help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(1e-4, envvar="FRAUDOPS_TRAIN_WEIGHT_DECAY", help="AdamW weight decay."),
    hidden: str = typer.Option("256,128", envvar="FRAUDOPS_TRAIN_HIDDEN", help="Hidden layer widths."),
    dropout: float = typer.Option(0.1, envvar="FRAUDOPS_TRAIN_DROPOUT", help="Dropout after each hidden layer."),
    patience: int = typer.Option(3, envvar="FRAUDOPS_TRAIN_PATIENCE", help="Early stopping patience (epochs)."),
    seed: int | None = typer.Option(None, help="Random seed (default: FRAUDOPS_SEED)."),
    val_fraction: float = typer.Option(0.15, envvar="FRAUDOPS_TRAIN_VAL_FRACTION", help="Validation share (by time)."),
    test_fraction: float = typer.Option(0.15, envvar="FRAUDOPS_TRAIN_TEST_FRACTION", help="Test share (newest)."),
    mixed_precision: str = typer.Option(
        "auto", envvar="FRAUDOPS_TRAIN_MIXED_PRECISION", help="auto (bf16 on GPU) | no | bf16 | fp16."
    ),
    min_precision: float | None = typer.Option(
        None,
        envvar="FRAUDOPS_TRAIN_MIN_PRECISION",
        help="Threshold at the best recall with this validation precision (default: max F1).",
    ),
    threads: int | None = typer.Option(
        None, envvar="FRAUDOPS_TRAIN_THREADS", help="CPU threads for torch (default: all cores; set the pod's limit)."
    ),
    experiment: str = typer.Option("fraudops", envvar="FRAUDOPS_EXPERIMENT", help="MLflow experiment."),
    run_name: str | None = typer.Option(None, help="MLflow run name."),
    validation_report: str | None = typer.Option(
        None, envvar="FRAUDOPS_VALIDATION_REPORT", help="URI of the data-validation report (lineage tag)."
    ),
    register: bool = typer.Option(True, help="Register the model as a new version (--no-register: track only)."),
    summary: str | None = typer.Option(None, help="Write the JSON summary here instead of stdout."),
) -> None:
    """Train the fraud model, evaluate it, track everything in MLflow and register it."""
    from fraudops.training.config import TrainConfig, parse_hidden
    from fraudops.training.data import TrainingDataError

    cfg = settings()
    try:
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            weight_decay=weight_decay,
            hidden=parse_hidden(hidden),
            dropout=dropout,
            patience=patience,
            seed=cfg.seed if seed is None else seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            mixed_precision=mixed_precision,  # type: ignore[arg-type]  # validated by TrainConfig
            min_precision=min_precision,
            num_threads=threads,
        )
    except ValueError as exc:
        fail(str(exc))

    from fraudops.training.pipeline import train_model
    from fraudops.training.tracking import TrackingUnavailable

    try:
        outcome = train_model(
            data,
            config=config,
            settings=cfg,
            data_version=data_version,
            experiment=experiment,
            run_name=run_name,
            register=register,
            validation_report=validation_report,
            min_rows=cfg.validation.min_rows,
        )
    except (TrainingDataError, TrackingUnavailable) as exc:
        fail(str(exc))
    except FloatingPointError as exc:
        fail(f"{exc}; try a lower --lr")
    if outcome is None:  # a non-main process under accelerate launch
        return
    m = outcome.metrics
    console().print(
        f"[green]✓[/] run {outcome.run_id}: test AUC-ROC {m['test_auc_roc']:.4f}, PR-AUC {m['test_pr_auc']:.4f}, "
        f"F1 {m['test_f1']:.3f} at threshold {outcome.threshold:.4f}"
        + (f"; registered {outcome.model_name} v{outcome.model_version}" if outcome.model_version else "")
    )
    emit_json(outcome.summary(), summary)


def export(
    model_version: str | None = typer.Option(
        None, "--model-version", help="Version number or alias (e.g. challenger); default: the newest version."
    ),
    tolerance: float = typer.Option(
        1e-5, envvar="FRAUDOPS_PARITY_TOLERANCE", help="Largest allowed |p_onnx - p_torch| on the test split."
    ),
    opset: int = typer.Option(18, min=17, help="ONNX opset (>= 17)."),
    summary: str | None = typer.Option(None, help="Write the JSON summary here instead of stdout."),
) -> None:
    """Export a registered version to ONNX, check parity, and publish its bundle."""
    from fraudops.export.onnx_export import ExportError, ParityError
    from fraudops.export.pipeline import export_model_version
    from fraudops.training.tracking import TrackingUnavailable

    cfg = settings()
    try:
        outcome = export_model_version(model_version, settings=cfg, tolerance=tolerance, opset=opset)
    except ParityError as exc:
        fail(f"{exc}; no bundle was written")
    except (ExportError, LookupError, ValueError, TrackingUnavailable) as exc:
        fail(str(exc))
    console().print(
        f"[green]✓[/] {outcome.model_name} v{outcome.model_version}: parity {outcome.parity_max_abs_diff:.2e} on "
        f"{outcome.parity_rows:,} rows; bundle at {outcome.bundle_path}"
    )
    emit_json(outcome.summary(), summary)
