"""The lifecycle's stages as plain functions with JSON-serializable inputs and outputs.

Both ``fraudops lifecycle`` and the Airflow DAGs call these, so the two paths cannot
drift apart: a DAG task is a thin wrapper that passes its data interval and the
previous task's return value. Each stage reads its window explicitly (never "now"),
so re-running an interval is idempotent.

Training is the exception: it runs as a command (:func:`training_command`), the very
command the GPU pod runs in production, so that it can be placed on another machine.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fraudops.settings import Settings

log = logging.getLogger(__name__)

StageResult = dict[str, Any]


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from fraudops.settings import get_settings

    return get_settings()


def generate(
    *,
    rows: int,
    seed: int | None = None,
    scenario: str = "baseline",
    start: datetime | None = None,
    days: float = 42.0,
    append: bool = False,
    settings: Settings | None = None,
) -> StageResult:
    """Generate synthetic transactions into the warehouse."""
    from fraudops.data.generate import DEFAULT_START, generate_transactions
    from fraudops.data.warehouse import open_warehouse

    cfg = _settings(settings)
    cfg.ensure_home()
    table = generate_transactions(
        rows, seed=cfg.seed if seed is None else seed, scenario=scenario, start=start or DEFAULT_START, days=days
    )
    wh = open_warehouse(cfg)
    try:
        wh.write_transactions(table, replace=not append)
        total = wh.count_transactions()
    finally:
        wh.close()
    fraud = int(table.column("is_fraud").to_numpy().sum())
    return {"rows": table.num_rows, "fraud": fraud, "warehouse_rows": total, "scenario": scenario}


def snapshot(
    *, start: datetime | None = None, end: datetime | None = None, settings: Settings | None = None
) -> StageResult:
    """Snapshot the window with DVC; the returned ``version`` is the data version."""
    from fraudops.data.snapshot import create_snapshot
    from fraudops.data.warehouse import open_warehouse

    cfg = _settings(settings)
    wh = open_warehouse(cfg)
    try:
        table = wh.read_transactions(start, end)
    finally:
        wh.close()
    if table.num_rows == 0:
        raise ValueError(f"no transactions in [{start}, {end}): nothing to snapshot")
    return create_snapshot(table, cfg, start=start, end=end).to_dict()


def training_command(
    training_set: str | Path,
    *,
    data_version: str,
    summary_path: str | Path,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The one definition of the training command (local process and GPU pod alike)."""
    return [
        "fraudops",
        "train",
        "--data",
        str(training_set),
        "--data-version",
        data_version,
        "--summary",
        str(summary_path),
        *(extra_args or []),
    ]


def validate(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    settings: Settings | None = None,
) -> StageResult:
    """The data-validation gate on a window; raises ``ValidationFailed`` when it fails."""
    from fraudops.data.validation import validate_window

    return validate_window(start, end, settings=_settings(settings))


def features(
    *,
    snapshot_info: StageResult,
    start: datetime | None = None,
    end: datetime | None = None,
    settings: Settings | None = None,
) -> StageResult:
    """Register the Feast repository, materialize the window online, build the training set."""
    import pyarrow.parquet as pq

    from fraudops.features import store

    cfg = _settings(settings)
    store.export_sources(cfg)
    store.apply(cfg)
    entity = pq.read_table(snapshot_info["path"], columns=list(store.IDENTITY_COLUMNS))
    times = entity.column("event_timestamp")
    first = start or times[0].as_py()
    last = end or times[-1].as_py()
    materialized = store.materialize(cfg, first, last + timedelta(seconds=1))
    table = store.training_set(cfg, entity)
    path = store.write_training_set(table, cfg.data_dir / "training_sets" / f"{snapshot_info['version']}.parquet")
    return {
        "training_set": str(path),
        "rows": table.num_rows,
        "data_version": snapshot_info["version"],
        "materialized": materialized.to_dict(),
    }


def train(
    *,
    training_set: str | Path,
    data_version: str,
    extra_args: list[str] | None = None,
    settings: Settings | None = None,
) -> StageResult:
    """Run the training command as a local process (the GPU pod runs the same command)."""
    import tempfile

    from fraudops.orchestration.process import run_training_command

    cfg = _settings(settings)
    cfg.ensure_home()
    with tempfile.TemporaryDirectory(dir=cfg.home) as tmp:
        summary_path = Path(tmp) / "summary.json"
        command = training_command(
            training_set, data_version=data_version, summary_path=summary_path, extra_args=extra_args
        )
        return run_training_command(command, summary_path)


def promote(
    *,
    model_version: str,
    reason: str,
    actor: str = "fraudops-lifecycle",
    skip_canary: bool = False,
    settings: Settings | None = None,
) -> StageResult:
    """Gate and move aliases; a rejection is returned (``passed: False``), not raised."""
    from fraudops.registry import service

    change = service.promote(
        model_version, skip_canary=skip_canary, actor=actor, reason=reason, settings=_settings(settings)
    )
    out = change.to_dict()
    out["passed"] = change.passed
    out["reason"] = change.decision.reason if change.decision is not None else change.note
    return out


def export(*, model_version: str, settings: Settings | None = None) -> StageResult:
    """ONNX export with parity check; publishes the bundle for the predictor."""
    from fraudops.export.pipeline import export_model_version

    return export_model_version(model_version, settings=_settings(settings)).summary()
