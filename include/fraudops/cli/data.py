"""``fraudops data ...``: generate, validate and snapshot transactions."""

from __future__ import annotations

import typer

from fraudops.cli import data_validate
from fraudops.cli._common import console, emit_json, fail, parse_time, settings, step

app = typer.Typer(help="Transactions: generate, validate, snapshot.", no_args_is_help=True)


@app.command()
def generate(
    rows: int = typer.Option(200_000, "--rows", "-n", min=1, help="Number of transactions."),
    seed: int | None = typer.Option(None, help="Random seed (default: FRAUDOPS_SEED)."),
    scenario: str = typer.Option(
        "baseline", help="baseline | amount_inflation | merchant_mix | fraud_surge | new_market"
    ),
    start: str | None = typer.Option(None, help="First day (ISO date, UTC); default 2026-09-01."),
    days: float = typer.Option(42.0, min=0.01, help="Days the batch spans."),
    fraud_rate: float = typer.Option(0.01, help="Base fraud rate before the scenario."),
    append: bool = typer.Option(False, help="Append to the warehouse instead of replacing the table."),
    parquet: str | None = typer.Option(None, help="Also write the batch to this Parquet file."),
) -> None:
    """Generate synthetic transactions into the warehouse (deterministic by seed)."""
    from fraudops.data.generate import DEFAULT_START, SCENARIOS, generate_transactions
    from fraudops.data.warehouse import open_warehouse

    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    cfg = settings()
    cfg.ensure_home()
    with step(f"generating {rows:,} transactions ({scenario})"):
        table = generate_transactions(
            rows,
            seed=cfg.seed if seed is None else seed,
            scenario=scenario,
            start=parse_time(start) or DEFAULT_START,
            days=days,
            fraud_rate=fraud_rate,
        )
    with step("loading into the warehouse"):
        wh = open_warehouse(cfg)
        try:
            wh.write_transactions(table, replace=not append)
            total = wh.count_transactions()
        finally:
            wh.close()
    if parquet:
        import pyarrow.parquet as pq

        pq.write_table(table, parquet)
    fraud = int(table.column("is_fraud").to_numpy().sum())
    console().print(
        f"{table.num_rows:,} rows, {fraud:,} fraud ({fraud / table.num_rows:.2%}); warehouse holds {total:,}"
    )
    emit_json({"rows": table.num_rows, "fraud": fraud, "warehouse_rows": total, "scenario": scenario})


@app.command()
def snapshot(
    start: str | None = typer.Option(None, help="Window start (ISO, UTC); default: all data."),
    end: str | None = typer.Option(None, help="Window end, exclusive (ISO, UTC)."),
    push: bool = typer.Option(True, help="Push the data to the DVC remote."),
    json_out: str | None = typer.Option(None, "--json", help="Write the snapshot info as JSON to this path."),
) -> None:
    """Write the training window as a DVC-versioned Parquet snapshot; the version is DVC's hash."""
    from fraudops.data.snapshot import create_snapshot
    from fraudops.data.warehouse import open_warehouse

    cfg = settings()
    cfg.ensure_home()
    t0, t1 = parse_time(start), parse_time(end)
    wh = open_warehouse(cfg)
    try:
        with step("reading the training window"):
            table = wh.read_transactions(t0, t1)
    finally:
        wh.close()
    if table.num_rows == 0:
        fail("the warehouse holds no transactions in that window: run `fraudops data generate` first")
    with step("snapshotting with DVC"):
        info = create_snapshot(table, cfg, start=t0, end=t1, push=push)
    console().print(f"data version [bold]{info.version}[/] ({info.rows:,} rows) at {info.path}")
    emit_json(info.to_dict(), json_out)


@app.command()
def checkout(version: str = typer.Argument(..., help="A data version (DVC md5) printed by `snapshot`.")) -> None:
    """Restore a snapshot by version (from the DVC cache, else the remote)."""
    from fraudops.data.snapshot import SnapshotNotFound, checkout_snapshot

    try:
        with step(f"checking out {version}"):
            path = checkout_snapshot(version, settings())
    except SnapshotNotFound as exc:
        fail(str(exc))
    emit_json({"version": version, "path": str(path)})


@app.command("snapshots")
def list_snapshots_cmd() -> None:
    """List the snapshots (data versions) of this repository."""
    from rich.table import Table

    from fraudops.data.snapshot import list_snapshots

    table = Table("version", "rows", "fraud", "window", "created")
    for info in list_snapshots(settings()):
        table.add_row(
            info.version, f"{info.rows:,}", f"{info.fraud_rows:,}", f"{info.start} .. {info.end}", info.created_at
        )
    console().print(table)


app.command("validate")(data_validate.validate)
