"""``fraudops features ...``: the Feast repository (export, apply, materialize, training sets)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer

from fraudops.cli._common import console, emit_json, fail, parse_time, settings, step

app = typer.Typer(
    help="Feature store (Feast): apply, materialize, training sets, online lookups.", no_args_is_help=True
)


@contextmanager
def _clean_errors() -> Iterator[None]:
    """Turn the feature store's expected failures into a one-line error and exit 1."""
    from fraudops.features.config import FeatureStoreConfigError
    from fraudops.features.store import FeatureStoreError

    try:
        yield
    except (FeatureStoreError, FeatureStoreConfigError, ValueError) as exc:
        fail(str(exc))


def _export(start: datetime | None = None, end: datetime | None = None) -> None:
    from fraudops.features.store import export_sources

    cfg = settings()
    if cfg.profile == "production":
        return
    with step("exporting the feature sources from the warehouse"):
        export_sources(cfg, start, end)


@app.command()
def export(
    start: str | None = typer.Option(None, help="Window start (ISO, UTC); default: all data."),
    end: str | None = typer.Option(None, help="Window end, exclusive (ISO, UTC)."),
) -> None:
    """Export the warehouse's transactions as the Parquet sources of the local offline store."""
    from fraudops.features.store import export_sources

    cfg = settings()
    cfg.ensure_home()
    with _clean_errors(), step("exporting the feature sources from the warehouse"):
        result = export_sources(cfg, parse_time(start), parse_time(end))
    if result is None:
        console().print("production profile: the sources read Snowflake directly; nothing to export")
        emit_json({"exported": False})
        return
    emit_json({"exported": True, **result.to_dict()})


@app.command("apply")
def apply_cmd(
    export_sources: bool = typer.Option(True, "--export/--no-export", help="Export the sources first (local)."),
) -> None:
    """Generate feature_store.yaml for the profile and register the repository in Feast."""
    from fraudops.features.store import apply

    cfg = settings()
    cfg.ensure_home()
    with _clean_errors():
        if export_sources:
            _export()
        with step(f"applying the feature repository ({cfg.profile})"):
            result = apply(cfg)
    console().print(
        f"feature service [bold]{result.feature_service}[/]: {result.offline_store} offline, "
        f"{result.online_store} online, repo {result.repo_dir}"
    )
    emit_json(result.to_dict())


def _run_materialize(start: str | None, end: str | None, incremental: bool, export_first: bool) -> None:
    from fraudops.features.store import materialize

    cfg = settings()
    t0 = parse_time(start)
    t1 = parse_time(end) or datetime.now(UTC)
    with _clean_errors():
        if export_first:
            _export()
        label = "incrementally " if incremental else ""
        with step(f"materializing {label}up to {t1.isoformat()}"):
            result = materialize(cfg, t0, t1, incremental=incremental)
    rate = result.rows_per_second
    counted = (
        f"{result.rows:,} rows, {result.keys:,} cards, " if result.rows is not None and result.keys is not None else ""
    )
    console().print(
        f"{counted}{result.start.isoformat()} .. {result.end.isoformat()} into {result.online_store} "
        f"in {result.seconds:.2f} s" + (f" ({rate:,.0f} rows/s)" if rate else "")
    )
    emit_json(result.to_dict())


_START_HELP = "Window start (ISO, UTC). Incremental: only used the first time (default: earliest exported event)."
_END_HELP = "Window end (ISO, UTC); default: now. The window is closed at both ends."


@app.command("materialize")
def materialize_cmd(
    start: str | None = typer.Option(None, help=_START_HELP),
    end: str | None = typer.Option(None, help=_END_HELP),
    incremental: bool = typer.Option(False, help="Start where the last materialization ended."),
    export_first: bool = typer.Option(True, "--export/--no-export", help="Export the sources first (local)."),
) -> None:
    """Load the online features (card_profile) into the online store, over a time window.

    Idempotent when repeated: the online store keeps the newest row per card.
    """
    if not incremental and start is None:
        fail("--start is required (or pass --incremental)")
    _run_materialize(start, end, incremental, export_first)


@app.command("materialize-incremental")
def materialize_incremental_cmd(
    end: str | None = typer.Option(None, help=_END_HELP),
    start: str | None = typer.Option(None, help=_START_HELP),
    export_first: bool = typer.Option(True, "--export/--no-export", help="Export the sources first (local)."),
) -> None:
    """Materialize from where the last run ended up to --end (same as `materialize --incremental`)."""
    _run_materialize(start, end, True, export_first)


@app.command("training-set")
def training_set_cmd(
    out: str = typer.Option(..., "--out", "-o", help="Parquet file to write."),
    start: str | None = typer.Option(None, help="Window start (ISO, UTC); default: all data."),
    end: str | None = typer.Option(None, help="Window end, exclusive (ISO, UTC)."),
    export_first: bool = typer.Option(True, "--export/--no-export", help="Export the sources first (local)."),
) -> None:
    """Write a point-in-time-correct training set (get_historical_features) for the warehouse window."""
    from fraudops.features.store import training_set, write_training_set

    cfg = settings()
    t0, t1 = parse_time(start), parse_time(end)
    with _clean_errors():
        if export_first:
            _export()
        with step("joining features as of each transaction (get_historical_features)"):
            table = training_set(cfg, start=t0, end=t1)
        path = write_training_set(table, out)
    fraud = int(table.column("is_fraud").to_numpy().sum()) if "is_fraud" in table.column_names else None
    console().print(f"{table.num_rows:,} rows x {table.num_columns} columns written to {path}")
    emit_json({"path": str(path), "rows": table.num_rows, "columns": table.num_columns, "fraud": fraud})


@app.command("online")
def online_cmd(card_ids: Annotated[list[int], typer.Argument(help="Card ids to look up.")]) -> None:
    """Read the online card features of some cards (what the predictor gets)."""
    from fraudops.features.store import CardFeatureReader

    with _clean_errors():
        reader = CardFeatureReader.open(settings())
        found = reader.get(card_ids)
    missing = [c for c in card_ids if c not in found]
    if missing:
        console().print(f"not in the online store: {', '.join(map(str, missing))}")
    emit_json({"backend": reader.backend, "features": {str(k): v for k, v in found.items()}, "missing": missing})
