"""``fraudops promote``, ``fraudops rollback`` and ``fraudops registry history|show``.

Exit codes: 0 done (or nothing to do), 3 the gate rejected the version (aliases
unchanged), 1 any other failure (aliases unchanged). Machine-readable results go to
stdout as JSON; the human summary goes to stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from fraudops.cli._common import console, emit_json, fail, parse_time, settings

if TYPE_CHECKING:
    from fraudops.registry import RegistryChange

GATE_REJECTED_EXIT = 3

app = typer.Typer(help="Model registry: alias history and versions.", no_args_is_help=True)

_ACTOR = typer.Option(None, "--actor", envvar="FRAUDOPS_ACTOR", help="Who acts (default: user@host).")


def _v(version: str | None) -> str:
    return f"v{version}" if version else "-"


def _summarize(change: RegistryChange) -> None:
    from rich.markup import escape

    out = console()
    if change.decision is not None:
        colour = "green" if change.decision.passed else "red"
        out.print(f"[bold {colour}]gate {escape(change.decision.reason)}[/]")
    if change.note and not change.moves:
        out.print(escape(change.note))
    for move in change.moves:
        out.print(
            f"[bold]{escape(change.model_name)}[/] {move.alias}: {move.action} "
            f"{_v(move.from_version)} -> {_v(move.to_version)}"
        )
    aliases = ", ".join(f"{a}={_v(v)}" for a, v in sorted(change.aliases_after.items())) or "none"
    out.print(f"aliases now: {escape(aliases)}")


def promote(
    model_version: str | None = typer.Option(
        None, "--model-version", help="Version number to promote (default: the newest version)."
    ),
    skip_canary: bool = typer.Option(False, "--skip-canary", help="Make it champion at once (no canary)."),
    actor: str | None = _ACTOR,
    reason: str | None = typer.Option(None, "--reason", help="Why; recorded with the gate's reason."),
) -> None:
    """Gate a model version and move the aliases: challenger (canary), or champion when there is none yet
    or with --skip-canary. A rejected gate exits 3 and moves nothing."""
    from fraudops.registry import RegistryError
    from fraudops.registry import promote as do_promote

    cfg = settings()
    try:
        change = do_promote(model_version, skip_canary=skip_canary, actor=actor, reason=reason, settings=cfg)
    except RegistryError as exc:
        fail(str(exc))
    _summarize(change)
    emit_json(change.to_dict())
    if not change.passed:
        raise typer.Exit(GATE_REJECTED_EXIT)


def rollback(
    reason: str | None = typer.Option(None, "--reason", help="Why; recorded."),
    actor: str | None = _ACTOR,
    to_version: str | None = typer.Option(
        None, "--to-version", help="Restore this version instead of the previous champion from the history."
    ),
) -> None:
    """Put the previous champion back (from the alias history), recorded like any move."""
    from fraudops.registry import RegistryError
    from fraudops.registry import rollback as do_rollback

    cfg = settings()
    try:
        change = do_rollback(reason=reason, actor=actor, to_version=to_version, settings=cfg)
    except RegistryError as exc:
        fail(str(exc))
    _summarize(change)
    emit_json(change.to_dict())


def _auc_text(value: str | None) -> str:
    try:
        return f"{float(value):.4f}" if value else "-"
    except ValueError:
        return f"{value!r} (not a number)"


def _fmt_time(value: Any) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@app.command()
def history(
    alias: str | None = typer.Option(None, "--alias", help="Only this alias (champion, challenger)."),
    at: str | None = typer.Option(
        None, "--at", help="Say which version held each alias at this time (ISO-8601; naive = UTC)."
    ),
    events: bool = typer.Option(False, "--events", help="List the individual moves instead of the periods."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout: events, periods (and the answer to --at)."),
) -> None:
    """Which version held which alias when: periods of each alias, or every move with who and why."""
    from rich.table import Table
    from rich.text import Text

    from fraudops.registry import RegistryError, alias_history, periods, version_at

    cfg = settings()
    when = parse_time(at)
    try:
        recorded = alias_history(alias=alias, settings=cfg)
    except RegistryError as exc:
        fail(str(exc))
    spans = periods(recorded)
    aliases = [alias] if alias else sorted({e.alias for e in recorded})
    held = {a: version_at(recorded, a, when) for a in aliases} if when is not None else None

    if as_json:
        payload: dict[str, Any] = {
            "model_name": cfg.model_name,
            "events": [e.to_dict() for e in recorded],
            "periods": [p.to_dict() for p in spans],
        }
        if held is not None and when is not None:
            payload["at"] = {"time": when.isoformat(), "aliases": held}
        emit_json(payload)
        return

    out = console()
    if not recorded:
        out.print(f"no alias moves recorded for {cfg.model_name!r}")
        return
    if events:
        table = Table(title=f"{cfg.model_name}: alias moves (UTC)")
        for col in ("#", "time", "alias", "action", "from", "to", "actor", "operation", "reason"):
            table.add_column(col, overflow="fold")
        for e in recorded:
            table.add_row(
                *map(
                    Text,
                    (
                        str(e.id),
                        _fmt_time(e.moved_at),
                        e.alias,
                        e.action,
                        _v(e.from_version),
                        _v(e.to_version),
                        e.actor,
                        e.operation,
                        e.reason,
                    ),
                )
            )
    else:
        table = Table(title=f"{cfg.model_name}: which version held which alias (UTC)")
        for col in ("alias", "version", "from", "until", "set by", "operation", "reason"):
            table.add_column(col, overflow="fold")
        for p in spans:
            table.add_row(
                *map(
                    Text,
                    (
                        p.alias,
                        _v(p.version),
                        _fmt_time(p.since),
                        _fmt_time(p.until) if p.until else "now",
                        p.set_by,
                        p.operation,
                        p.reason,
                    ),
                )
            )
    out.print(table)
    if held is not None and when is not None:
        for name, ver in held.items():
            out.print(f"at {when.isoformat()}: {name} = {_v(ver) if ver else 'none'}", markup=False)


@app.command()
def show(
    model_version: str | None = typer.Option(None, "--model-version", help="Show this version in full."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the newest versions to list."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """The registered model: its aliases and newest versions with metrics and lineage."""
    from rich.table import Table
    from rich.text import Text

    from fraudops.registry import RegistryError, describe, describe_version

    cfg = settings()
    try:
        info = (
            describe_version(model_version, settings=cfg)
            if model_version is not None
            else describe(limit=limit, settings=cfg)
        )
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        emit_json(info)
        return
    out = console()
    if model_version is not None:
        table = Table(title=Text(f"{info['model_name']} v{info['version']}"), show_header=False)
        table.add_column("key")
        table.add_column("value", overflow="fold")
        for key in ("aliases", "status", "created_at", "run_id", "source", "description"):
            value = info[key]
            table.add_row(key, Text(", ".join(value) if isinstance(value, list) else str(value)))
        for key, value in info["tags"].items():
            table.add_row(Text(f"tag {key}"), Text(value))
        out.print(table)
        return
    aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(info["aliases"].items())) or "none"
    table = Table(title=Text(f"{info['model_name']} (aliases: {aliases})"))
    for col in ("version", "aliases", "test AUC-ROC", "threshold", "gate", "data version", "created (UTC)", "run"):
        table.add_column(col, overflow="fold")
    for v in info["versions"]:
        auc = v["test_auc_roc"]
        table.add_row(
            v["version"],
            Text(", ".join(v["aliases"])),
            _auc_text(auc),
            v["threshold"] or "-",
            {"true": "passed", "false": "rejected"}.get(v["gate_passed"] or "", "-"),
            (v["data_version"] or "-")[:12],
            v["created_at"][:19],
            (v["run_id"] or "-")[:12],
        )
    out.print(table)
