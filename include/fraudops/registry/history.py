"""Alias moves and their history, as plain data with pure functions over it.

An :class:`AliasEvent` is one recorded move of one alias. The audit log
(:mod:`fraudops.registry.audit`) stores them; the functions here answer questions about a
sequence of them: which version held an alias at a time, the periods each version held
it, the champion to roll back to, and whether a history is consistent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

CHAMPION = "champion"
CHALLENGER = "challenger"

Action = Literal["set", "move", "delete"]

# Operations (why a move happened, as a machine-readable kind; the free text is ``reason``).
OP_PROMOTE = "promote"
OP_ROLLBACK = "rollback"
OP_CANARY_PROMOTE = "canary-promote"
OP_CANARY_REJECT = "canary-reject"


@dataclass(frozen=True)
class AliasMove:
    """A planned change of one alias: ``None`` as ``from_version`` sets it, as ``to_version`` deletes it."""

    alias: str
    from_version: str | None
    to_version: str | None

    @property
    def action(self) -> Action:
        """``set`` (the alias did not exist), ``move`` or ``delete``."""
        if self.to_version is None:
            return "delete"
        return "set" if self.from_version is None else "move"


@dataclass(frozen=True)
class AliasEvent:
    """One recorded alias move: what, when (UTC), who, why."""

    id: int
    model_name: str
    alias: str
    action: Action
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    operation: str
    operation_id: str
    moved_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (time as ISO-8601 with ``+00:00``)."""
        return {
            "id": self.id,
            "model_name": self.model_name,
            "alias": self.alias,
            "action": self.action,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "actor": self.actor,
            "reason": self.reason,
            "operation": self.operation,
            "operation_id": self.operation_id,
            "moved_at": self.moved_at.isoformat(),
        }


@dataclass(frozen=True)
class AliasPeriod:
    """A version holding an alias from ``since`` until ``until`` (``None``: still holds it)."""

    alias: str
    version: str
    since: datetime
    until: datetime | None
    set_by: str
    reason: str
    operation: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "alias": self.alias,
            "version": self.version,
            "since": self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "set_by": self.set_by,
            "reason": self.reason,
            "operation": self.operation,
        }


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ordered(events: Iterable[AliasEvent]) -> list[AliasEvent]:
    # The id is the order in which moves were made (assigned under the registry lock);
    # times can tie at the clock's resolution.
    return sorted(events, key=lambda e: e.id)


def version_at(events: Iterable[AliasEvent], alias: str, at: datetime) -> str | None:
    """The version that held ``alias`` at time ``at``, or ``None`` (unset, or before any record).

    A move recorded exactly at ``at`` counts as done.
    """
    when = as_utc(at)
    holder: str | None = None
    for event in _ordered(events):
        if event.alias != alias:
            continue
        if as_utc(event.moved_at) > when:
            break
        holder = event.to_version
    return holder


def periods(events: Iterable[AliasEvent]) -> list[AliasPeriod]:
    """Which version held which alias when, oldest first."""
    out: list[AliasPeriod] = []
    open_by_alias: dict[str, int] = {}
    for event in _ordered(events):
        idx = open_by_alias.pop(event.alias, None)
        if idx is not None:
            p = out[idx]
            out[idx] = AliasPeriod(p.alias, p.version, p.since, event.moved_at, p.set_by, p.reason, p.operation)
        if event.to_version is not None:
            open_by_alias[event.alias] = len(out)
            out.append(
                AliasPeriod(
                    event.alias,
                    event.to_version,
                    event.moved_at,
                    None,
                    event.actor,
                    event.reason,
                    event.operation,
                )
            )
    return out


def champion_stack(events: Iterable[AliasEvent]) -> list[str]:
    """The champions in the order they took over, with rolled-back ones removed.

    A rollback pops the champion it replaced, so that rolling back twice goes two
    champions back (v3 -> v2 -> v1), instead of toggling between the last two.
    """
    stack: list[str] = []
    for event in _ordered(events):
        if event.alias != CHAMPION:
            continue
        if event.to_version is None:
            # The champion was deleted: nothing served, nothing to go back through.
            stack.clear()
            continue
        if event.operation == OP_ROLLBACK and stack and stack[-1] == event.from_version:
            stack.pop()
        if not stack or stack[-1] != event.to_version:
            stack.append(event.to_version)
    return stack


class RollbackError(ValueError):
    """No previous champion can be determined from the history."""


def rollback_target(events: Sequence[AliasEvent], current_champion: str | None) -> str:
    """The version a rollback puts back as champion.

    Raises:
        RollbackError: no champion now, no earlier champion, or the registry's champion
            differs from the last recorded one (it was moved outside fraudops, so the
            history cannot say what "previous" means; name the version explicitly).
    """
    if current_champion is None:
        raise RollbackError("there is no champion to roll back")
    stack = champion_stack(events)
    if not stack:
        raise RollbackError(f"no recorded champion history (the champion is v{current_champion})")
    if stack[-1] != current_champion:
        raise RollbackError(
            f"the champion alias points at v{current_champion} but the last recorded champion is "
            f"v{stack[-1]}: it was moved outside fraudops; name the version to restore explicitly"
        )
    if len(stack) < 2:
        raise RollbackError(f"v{current_champion} is the first recorded champion; there is none before it")
    return stack[-2]


def chain_problems(events: Iterable[AliasEvent], current: Mapping[str, str] | None = None) -> list[str]:
    """Inconsistencies of a history: a move whose ``from_version`` is not the previous
    ``to_version`` of that alias, and (given the registry's ``current`` aliases) a last
    recorded version that is not the alias's present one. Empty when consistent.
    """
    problems: list[str] = []
    last: dict[str, str | None] = {}
    for event in _ordered(events):
        if event.alias in last and last[event.alias] != event.from_version:
            problems.append(
                f"event {event.id}: {event.alias} moved from v{event.from_version}, but the previous "
                f"record left it at v{last[event.alias]}"
            )
        last[event.alias] = event.to_version
    if current is not None:
        for alias, version in last.items():
            if current.get(alias) != version:
                problems.append(f"{alias}: last recorded v{version}, registry has v{current.get(alias)}")
        for alias, version in current.items():
            if alias not in last:
                problems.append(f"{alias}: registry has v{version} with no recorded move")
    return problems


def plan_promotion(aliases: Mapping[str, str], version: str, *, skip_canary: bool) -> list[AliasMove]:
    """The alias moves that promote ``version`` after a passed gate.

    - The version becomes ``challenger`` (the canary takes over from there).
    - It becomes ``champion`` directly when there is no champion yet or ``skip_canary``;
      then any ``challenger`` is removed: a canary of the champion itself means nothing, and
      an older challenger was gated against a champion that is no longer there.
    - Already champion, or already challenger on the canary path: nothing moves (a retried
      task is a no-op).
    """
    champion = aliases.get(CHAMPION)
    challenger = aliases.get(CHALLENGER)
    if champion == version:
        return []
    if skip_canary or champion is None:
        moves = [AliasMove(CHAMPION, champion, version)]
        if challenger is not None:
            moves.append(AliasMove(CHALLENGER, challenger, None))
        return moves
    if challenger == version:
        return []
    return [AliasMove(CHALLENGER, challenger, version)]
