"""``fraudops data validate``: the data-validation gate over the warehouse."""

from __future__ import annotations

import typer

from fraudops.cli._common import console, emit_json, fail, parse_time, settings, step


def validate(
    start: str | None = typer.Option(None, help="First event time of the window (ISO date/datetime, UTC)."),
    end: str | None = typer.Option(None, help="End of the window, exclusive (ISO date/datetime, UTC)."),
    reference_time: str | None = typer.Option(
        None,
        "--reference-time",
        help="Freshness is judged against this time (default: --end if given, else the newest event).",
    ),
    json_path: str | None = typer.Option(
        None, "--json", help="Write the result as JSON to this file (default: JSON on stdout)."
    ),
    docs: bool = typer.Option(True, "--docs/--no-docs", help="Update the Data Docs HTML site."),
) -> None:
    """Run the Great Expectations suite on the transactions; exit 1 when the gate fails."""
    from fraudops.data.validation import validate_warehouse

    cfg = settings()
    cfg.ensure_home()
    window_start, window_end = parse_time(start), parse_time(end)
    if window_start is not None and window_end is not None and window_start >= window_end:
        fail(f"--start {window_start.isoformat()} is not before --end {window_end.isoformat()}")
    try:
        with step("validating transactions (Great Expectations checkpoint)"):
            result = validate_warehouse(
                cfg,
                start=window_start,
                end=window_end,
                reference_time=parse_time(reference_time),
                build_docs=docs,
            )
    except ValueError as exc:  # bad bounds in the configuration
        fail(str(exc))

    out = console()
    stats = result.statistics
    rate = stats.get("fraud_rate")
    summary = f"{stats.get('rows', 0):,} rows" + (f", fraud rate {rate:.2%}" if rate is not None else "")
    summary += f", suite {result.suite_name} v{result.suite_version}"
    if result.success:
        out.print(f"[bold green]PASSED[/] {summary}")
    else:
        out.print(f"[bold red]FAILED[/] {summary}: {len(result.failures)} problem(s)")
        for line in result.failures:
            out.print(f"  - {line}", markup=False, highlight=False)
    if result.data_docs_index is not None:
        out.print(f"Data Docs: {result.data_docs_index}", markup=False, highlight=False)
    if result.data_docs_page is not None:
        out.print(f"this run:  {result.data_docs_page}", markup=False, highlight=False)
    emit_json(result.to_dict(), json_path)
    if not result.success:
        raise typer.Exit(1)
