"""``fraudops lifecycle``: the whole lifecycle on the embedded default, in order."""

from __future__ import annotations

import time
from typing import Any

import typer

from fraudops.cli._common import console, emit_json, fail, settings, step


def lifecycle(
    rows: int = typer.Option(200_000, "--rows", "-n", min=1_000, help="Transactions to generate."),
    days: float = typer.Option(42.0, min=1.0, help="Days the data spans."),
    scenario: str = typer.Option("baseline", help="Data scenario for the generated batch."),
    seed: int | None = typer.Option(None, help="Random seed (default: FRAUDOPS_SEED)."),
    epochs: int = typer.Option(15, min=1, help="Maximum training epochs."),
    skip_canary: bool = typer.Option(False, help="Make a passing model champion at once."),
    reason: str = typer.Option("fraudops lifecycle", help="Reason recorded with the alias move."),
    json_out: str | None = typer.Option(None, "--json", help="Write the summary as JSON to this path."),
) -> None:
    """Generate, validate, snapshot, features, train, evaluate, promote and export, in order."""
    from fraudops import pipeline
    from fraudops.data.generate import DEFAULT_START

    cfg = settings()
    cfg.ensure_home()
    started = time.perf_counter()
    out: dict[str, Any] = {"home": str(cfg.home)}
    with step(f"generate {rows:,} transactions ({scenario})"):
        out["generate"] = pipeline.generate(rows=rows, seed=seed, scenario=scenario, start=DEFAULT_START, days=days)
    with step("validate (Great Expectations)"):
        from fraudops.data.validation import ValidationFailed

        try:
            out["validate"] = pipeline.validate()
        except ValidationFailed as exc:
            fail(f"data validation failed, nothing downstream runs:\n{exc}")
    with step("snapshot (DVC)"):
        snap = pipeline.snapshot()
    out["snapshot"] = snap
    with step("features (Feast: apply, materialize, point-in-time training set)"):
        feats = pipeline.features(snapshot_info=snap)
    out["features"] = feats
    with step(f"train (Accelerate, up to {epochs} epochs) and evaluate on the test split"):
        trained = pipeline.train(
            training_set=feats["training_set"], data_version=snap["version"], extra_args=["--epochs", str(epochs)]
        )
    out["train"] = trained
    version = str(trained.get("model_version") or "")
    if not version:
        fail(f"training registered no model version: {trained}")
    with step(f"gate and promote v{version}"):
        promoted = pipeline.promote(model_version=version, reason=reason, skip_canary=skip_canary)
    out["promote"] = promoted
    bundle: dict[str, Any] | None = None
    if promoted["passed"]:
        with step(f"export v{version} to ONNX (parity checked)"):
            bundle = pipeline.export(model_version=version)
    out["export"] = bundle
    out["seconds"] = round(time.perf_counter() - started, 1)
    _print_summary(out)
    if json_out:
        emit_json(out, json_out)
    if not promoted["passed"]:
        raise typer.Exit(3)


def _print_summary(out: dict[str, Any]) -> None:
    from rich.table import Table

    trained, promoted, bundle = out["train"], out["promote"], out["export"]
    metrics = trained.get("metrics", {})
    table = Table(title="fraudops lifecycle", show_header=False)
    table.add_row("data version", out["snapshot"]["version"])
    table.add_row("rows / fraud", f"{out['generate']['rows']:,} / {out['generate']['fraud']:,}")
    table.add_row("training set", out["features"]["training_set"])
    table.add_row("MLflow run", str(trained.get("run_id")))
    for key in ("test_auc_roc", "test_pr_auc", "test_precision", "test_recall", "test_f1"):
        if key in metrics:
            table.add_row(key, f"{float(metrics[key]):.4f}")
    table.add_row("threshold", str(trained.get("threshold")))
    table.add_row("model version", f"{trained.get('model_name', '')} v{trained.get('model_version')}")
    table.add_row("gate", ("PASSED: " if promoted["passed"] else "REJECTED: ") + str(promoted.get("reason") or ""))
    table.add_row("aliases", ", ".join(f"{k}=v{v}" for k, v in sorted(promoted.get("aliases_after", {}).items())))
    if bundle:
        table.add_row("bundle", str(bundle.get("bundle_path")))
        table.add_row("ONNX parity", f"max |diff| {bundle.get('parity_max_abs_diff'):.2e}")
    table.add_row("wall time", f"{out['seconds']} s")
    console().print(table)
