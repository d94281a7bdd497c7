"""Shared CLI plumbing: settings, logging, progress, and clean failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
import typer

if TYPE_CHECKING:
    from rich.console import Console

    from fraudops.settings import Settings

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console(), show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in (
        "great_expectations",
        "feast",
        "mlflow",
        "alembic",
        "urllib3",
        "filelock",
        "dvc",
        "httpx",
        "httpcore",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def settings() -> Settings:
    from fraudops.settings import get_settings

    try:
        return get_settings()
    except Exception as exc:  # pydantic's ValidationError, with the field names
        fail(f"invalid configuration: {exc}")


def fail(message: str, code: int = 1) -> NoReturn:
    console().print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def emit_json(payload: dict[str, Any], path: str | None = None) -> None:
    """Write a machine-readable summary to ``path`` or stdout (stdout stays clean JSON)."""
    data = orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str)
    if path:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data + b"\n")
    else:
        sys.stdout.write(data.decode() + "\n")
        sys.stdout.flush()


def parse_time(value: str | None) -> datetime | None:
    """ISO-8601 date or datetime; naive values are taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"not an ISO-8601 date or datetime: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@contextmanager
def step(description: str) -> Iterator[None]:
    """A spinner with elapsed time for a long step (on stderr, so stdout stays parseable)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console(), transient=True
    ) as progress:
        progress.add_task(description, total=None)
        yield
    console().print(f"[green]✓[/] {description}")
