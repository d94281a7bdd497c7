"""Registry operations: gated promotion, canary resolution, rollback, history.

Every function here that moves an alias does it the same way:

1. take the registry lock of the model (:meth:`AuditLog.locked`), so that concurrent
   movers, on any machine, go one after the other;
2. re-read the aliases inside the lock and decide from what is there now;
3. move the aliases through the MLflow client (registry aliases only; the deprecated
   stages are never used);
4. append one history row per move and commit. If a step fails, the moves already made
   are reverted before the error propagates, so a failure leaves the aliases as they were.

A gate rejection is a normal outcome, not an error: :func:`promote` returns it. The CLI
turns it into a non-zero exit.

MLflow and SQLAlchemy are imported inside the functions: the CLI and the DAGs import this
module at start-up.
"""

from __future__ import annotations

import getpass
import logging
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fraudops.registry.errors import RegistryError, RegistryNotFound, RegistryUnavailable
from fraudops.registry.gate import GateDecision, evaluate_gate
from fraudops.registry.history import (
    CHALLENGER,
    CHAMPION,
    OP_CANARY_PROMOTE,
    OP_CANARY_REJECT,
    OP_PROMOTE,
    OP_ROLLBACK,
    AliasEvent,
    AliasMove,
    RollbackError,
    periods,
    plan_promotion,
    rollback_target,
    version_at,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from fraudops.registry.audit import AuditLog, LockedSession
    from fraudops.settings import Settings

log = logging.getLogger(__name__)

AUC_KEY = "test_auc_roc"
# Tags written on a candidate by the gate (the decision stays visible in the MLflow UI).
GATE_TAGS = ("gate_passed", "gate_reason", "gate_champion_version", "gate_evaluated_at")
_MAX_TAG_VALUE = 5000  # MLflow's limit on a model version tag value


@dataclass(frozen=True)
class RegistryChange:
    """The outcome of one registry operation.

    ``moves`` is empty when nothing moved (a rejected gate, or a retried operation that
    was already done); ``decision`` is set by :func:`promote` only.
    """

    model_name: str
    operation: str
    version: str | None
    moves: tuple[AliasMove, ...]
    events: tuple[AliasEvent, ...]
    aliases_before: dict[str, str]
    aliases_after: dict[str, str]
    decision: GateDecision | None = None
    note: str = ""
    actor: str = ""
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """False only for a rejected gate."""
        return self.decision is None or self.decision.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (Airflow XCom, ``--json``)."""
        return {
            "model_name": self.model_name,
            "operation": self.operation,
            "version": self.version,
            "passed": self.passed,
            "moves": [
                {"alias": m.alias, "action": m.action, "from_version": m.from_version, "to_version": m.to_version}
                for m in self.moves
            ],
            "events": [e.to_dict() for e in self.events],
            "aliases_before": dict(self.aliases_before),
            "aliases_after": dict(self.aliases_after),
            "decision": None if self.decision is None else self.decision.to_dict(),
            "note": self.note,
            "actor": self.actor,
            "reason": self.reason,
        }


def default_actor() -> str:
    """Who acts when nobody says: ``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers (no passwd entry for the uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


_MAX_ACTOR = 256  # the history's column width


def _actor(actor: str | None) -> str:
    who = (actor or "").strip() or default_actor()
    if len(who) > _MAX_ACTOR:
        raise RegistryError(f"actor is {len(who)} characters long; at most {_MAX_ACTOR} are recorded")
    return who


@dataclass
class _Registry:
    settings: Settings
    client: MlflowClient
    audit: AuditLog

    @property
    def name(self) -> str:
        return self.settings.model_name


def _open(settings: Settings | None) -> _Registry:
    from mlflow.exceptions import MlflowException

    from fraudops.registry.audit import AuditLog
    from fraudops.settings import get_settings
    from fraudops.training.tracking import configure

    cfg = settings if settings is not None else get_settings()
    audit = AuditLog(cfg.tracking_uri)  # checks the URI before MLflow touches anything
    # A database that is down fails here at once, with its address; MLflow itself would
    # retry for about 100 s before giving up.
    audit.check_reachable()
    client = configure(cfg)
    try:
        # Opens MLflow's store, which creates MLflow's tables in a new database: they must
        # exist before ours, or MLflow would take the database for an old one to upgrade.
        client.search_registered_models(max_results=1)
    except MlflowException as exc:
        raise _mlflow_error(exc, "opening the model registry") from exc
    return _Registry(cfg, client, audit)


def _mlflow_error(exc: Exception, what: str) -> RegistryError:
    code = getattr(exc, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return RegistryNotFound(f"{what}: {exc}")
    text = str(exc)
    if "OperationalError" in text or "could not connect" in text.lower() or "unable to open" in text.lower():
        return RegistryUnavailable(f"{what}: the registry database cannot be reached: {text.splitlines()[0]}")
    return RegistryError(f"{what}: {text.splitlines()[0] if text else type(exc).__name__}")


def _aliases(reg: _Registry) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        model = reg.client.get_registered_model(reg.name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryNotFound(
                f"registered model {reg.name!r} does not exist; train and register a model first (fraudops train)"
            ) from exc
        raise _mlflow_error(exc, f"reading the aliases of {reg.name!r}") from exc
    return {str(alias): str(version) for alias, version in model.aliases.items()}


def _model_version(reg: _Registry, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    if not version.isdigit():
        raise RegistryError(f"a model version is a positive integer, got {version!r}")
    try:
        return reg.client.get_model_version(reg.name, version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryNotFound(f"{reg.name!r} has no version {version}") from exc
        raise _mlflow_error(exc, f"reading {reg.name!r} v{version}") from exc


def _latest_version(reg: _Registry) -> str:
    from mlflow.exceptions import MlflowException

    _aliases(reg)  # a clear error when the model itself does not exist
    try:
        found = reg.client.search_model_versions(
            f"name = '{_quoted(reg.name)}'", max_results=1, order_by=["version_number DESC"]
        )
    except MlflowException as exc:
        raise _mlflow_error(exc, f"listing versions of {reg.name!r}") from exc
    if not found:
        raise RegistryNotFound(f"registered model {reg.name!r} has no versions; run `fraudops train` first")
    return str(found[0].version)


def _quoted(value: str) -> str:
    # MLflow's filter grammar quotes with single quotes; such a model name is refused.
    if "'" in value:
        raise RegistryError(f"model name must not contain a quote: {value!r}")
    return value


def version_auc(client: MlflowClient, mv: ModelVersion) -> float | None:
    """A version's test AUC-ROC: its ``test_auc_roc`` tag, else its run's metric; ``None`` if neither.

    A tag that is not a number reads as NaN, which the gate rejects (it fails closed).
    """
    tag = (mv.tags or {}).get(AUC_KEY)
    if tag is not None:
        try:
            return float(tag)
        except ValueError:
            log.warning("v%s: tag %s=%r is not a number", mv.version, AUC_KEY, tag)
            return math.nan
    if mv.run_id:
        from mlflow.exceptions import MlflowException

        try:
            metric = client.get_run(mv.run_id).data.metrics.get(AUC_KEY)
        except MlflowException:
            log.warning("v%s: its run %s cannot be read", mv.version, mv.run_id)
            return None
        return None if metric is None else float(metric)
    return None


def _apply(
    reg: _Registry,
    session: LockedSession,
    moves: Sequence[AliasMove],
    *,
    actor: str,
    reason: str,
    operation: str,
) -> list[AliasEvent]:
    """Move the aliases, record the moves, commit; on any failure undo the moves made."""
    applied: list[AliasMove] = []
    try:
        for move in moves:
            if move.to_version is None:
                reg.client.delete_registered_model_alias(reg.name, move.alias)
            else:
                reg.client.set_registered_model_alias(reg.name, move.alias, move.to_version)
            applied.append(move)
        events = session.append(reg.name, moves, actor=actor, reason=reason, operation=operation)
        session.commit()
    except BaseException:
        session.abort_writes()  # on SQLite, our write lock would stop MLflow's reverting writes
        _revert(reg, applied)
        raise
    for event in events:
        log.info(
            "%s %s %s: %s -> %s (%s, by %s)",
            reg.name,
            event.alias,
            event.action,
            f"v{event.from_version}" if event.from_version else "-",
            f"v{event.to_version}" if event.to_version else "-",
            operation,
            actor,
        )
    return events


def _revert(reg: _Registry, applied: Sequence[AliasMove]) -> None:
    for move in reversed(applied):
        try:
            if move.from_version is None:
                reg.client.delete_registered_model_alias(reg.name, move.alias)
            else:
                reg.client.set_registered_model_alias(reg.name, move.alias, move.from_version)
        except Exception:
            # Nothing more can be done here; the message says exactly what to restore.
            log.exception(
                "could not restore %s alias %s to v%s after a failed operation; restore it by hand",
                reg.name,
                move.alias,
                move.from_version,
            )


def _tag_decision(reg: _Registry, decision: GateDecision, version: str) -> None:
    tags = {
        "gate_passed": str(decision.passed).lower(),
        "gate_reason": decision.reason[:_MAX_TAG_VALUE],
        "gate_champion_version": decision.champion_version or "",
        "gate_evaluated_at": datetime.now(UTC).isoformat(),
    }
    try:
        for key, value in tags.items():
            reg.client.set_model_version_tag(reg.name, version, key, value)
    except Exception as exc:  # the decision stands without its tags; say so
        log.warning("could not tag %s v%s with the gate decision: %s", reg.name, version, exc)


def _combine(reason: str | None, automatic: str) -> str:
    return f"{reason} [{automatic}]" if reason else automatic


def promote(
    version: str | int | None = None,
    *,
    skip_canary: bool = False,
    actor: str | None = None,
    reason: str | None = None,
    settings: Settings | None = None,
) -> RegistryChange:
    """Gate a model version and, when it passes, move the aliases.

    Passing makes the version ``challenger``; it becomes ``champion`` directly when there
    is no champion yet or ``skip_canary`` (and any challenger is then removed, see
    :func:`~fraudops.registry.history.plan_promotion`). A rejection moves nothing and is
    returned, not raised (``result.passed`` is False). The gate compares with the champion
    read inside the registry lock.

    Args:
        version: the version number; ``None`` is the newest version.
        skip_canary: make it champion at once.
        actor: who promotes (default: ``user@host``).
        reason: why; recorded with the gate's own reason.

    Raises:
        RegistryError: the model or version does not exist, or the registry cannot be
            reached; aliases are as they were.
    """
    reg = _open(settings)
    who = _actor(actor)
    ver = str(version) if version is not None else _latest_version(reg)
    mv = _model_version(reg, ver)
    if str(mv.status) not in ("READY", "ModelVersionStatus.READY"):
        raise RegistryError(f"{reg.name!r} v{ver} is not ready (status {mv.status})")
    cand_auc = version_auc(reg.client, mv)
    gate_cfg = reg.settings.gate

    with reg.audit.locked(reg.name) as session:
        before = _aliases(reg)
        champion = before.get(CHAMPION)
        champion_auc: float | None = None
        if champion is not None:
            champion_auc = cand_auc if champion == ver else version_auc(reg.client, _model_version(reg, champion))
        decision = evaluate_gate(
            cand_auc,
            champion_auc,
            floor=gate_cfg.auc_floor,
            max_regression=gate_cfg.max_regression,
            candidate_version=ver,
            champion_version=champion,
        )
        if champion != ver:  # a retry on the champion keeps the tags of its real gate
            _tag_decision(reg, decision, ver)
        if not decision.passed:
            log.warning("%s v%s: gate %s", reg.name, ver, decision.reason)
            return RegistryChange(
                reg.name, OP_PROMOTE, ver, (), (), before, dict(before), decision, actor=who, reason=reason or ""
            )
        moves = plan_promotion(before, ver, skip_canary=skip_canary)
        if not moves:
            note = (
                f"v{ver} is already the champion: nothing to move"
                if champion == ver
                else f"v{ver} is already the challenger: nothing to move"
            )
            return RegistryChange(
                reg.name, OP_PROMOTE, ver, (), (), before, dict(before), decision, note, who, reason or ""
            )
        direct = any(m.alias == CHAMPION for m in moves)
        how = (
            "champion directly (no champion yet)"
            if direct and champion is None
            else "champion directly (canary skipped)"
            if direct
            else f"challenger for a {reg.settings.canary.share:.0%} canary"
        )
        recorded = _combine(reason, f"promote v{ver} to {how}; gate {decision.reason}")
        events = _apply(reg, session, moves, actor=who, reason=recorded, operation=OP_PROMOTE)
        after = _aliases(reg)
    return RegistryChange(
        reg.name, OP_PROMOTE, ver, tuple(moves), tuple(events), before, after, decision, how, who, recorded
    )


def rollback(
    *,
    reason: str | None = None,
    actor: str | None = None,
    to_version: str | int | None = None,
    settings: Settings | None = None,
) -> RegistryChange:
    """Put the previous champion back, as the alias history records it.

    "Previous" follows the history as a stack: rolling back twice goes two champions
    back. ``to_version`` names the version instead (no gate: a rollback is an operator's
    decision). A challenger pointing at the restored version is removed.

    Raises:
        RegistryError: no champion, no earlier champion, a champion moved outside
            fraudops (name ``to_version`` then), or an unknown version.
    """
    reg = _open(settings)
    who = _actor(actor)
    with reg.audit.locked(reg.name) as session:
        before = _aliases(reg)
        current = before.get(CHAMPION)
        if to_version is not None:
            target = str(to_version)
            if current is None:
                note = "no champion yet"
            elif target == current:
                raise RegistryError(f"v{target} is already the champion")
            else:
                note = f"explicit version (was v{current})"
        else:
            try:
                target = rollback_target(session.events(reg.name), current)
            except RollbackError as exc:
                raise RegistryError(f"cannot roll back {reg.name!r}: {exc}") from exc
            note = f"previous champion (was v{current})"
        _model_version(reg, target)  # exists (a deleted version cannot serve)
        moves = [AliasMove(CHAMPION, current, target)]
        if before.get(CHALLENGER) == target:
            moves.append(AliasMove(CHALLENGER, target, None))
        recorded = _combine(reason, f"rollback: champion v{current} -> v{target} ({note})")
        events = _apply(reg, session, moves, actor=who, reason=recorded, operation=OP_ROLLBACK)
        after = _aliases(reg)
    return RegistryChange(
        reg.name, OP_ROLLBACK, target, tuple(moves), tuple(events), before, after, None, note, who, recorded
    )


def promote_challenger_to_champion(
    reason: str,
    actor: str | None = None,
    *,
    expected_version: str | int | None = None,
    settings: Settings | None = None,
) -> RegistryChange:
    """End a canary in favour of the challenger: it becomes champion, the challenger alias goes.

    Args:
        reason: why (e.g. the canary comparison); recorded.
        expected_version: the version the canary watched. If the challenger is now another
            version (a newer promotion replaced it), nothing moves and an error says so. If
            that version is already champion and no challenger is left, the call is a
            no-op (a retried task).

    Raises:
        RegistryError: no challenger, or not the expected one.
    """
    reg = _open(settings)
    who = _actor(actor)
    expected = None if expected_version is None else str(expected_version)
    with reg.audit.locked(reg.name) as session:
        before = _aliases(reg)
        challenger = before.get(CHALLENGER)
        champion = before.get(CHAMPION)
        if challenger is None:
            if expected is not None and champion == expected:
                return RegistryChange(
                    reg.name,
                    OP_CANARY_PROMOTE,
                    expected,
                    (),
                    (),
                    before,
                    dict(before),
                    note=f"v{expected} is already the champion: nothing to move",
                    actor=who,
                    reason=reason,
                )
            raise RegistryError(f"{reg.name!r} has no challenger to promote")
        if expected is not None and challenger != expected:
            raise RegistryError(
                f"the challenger of {reg.name!r} is v{challenger}, not the v{expected} the canary watched; "
                "nothing moved"
            )
        moves = [AliasMove(CHAMPION, champion, challenger), AliasMove(CHALLENGER, challenger, None)]
        recorded = f"{reason} [canary: challenger v{challenger} replaces champion v{champion}]"
        events = _apply(reg, session, moves, actor=who, reason=recorded, operation=OP_CANARY_PROMOTE)
        after = _aliases(reg)
    return RegistryChange(
        reg.name, OP_CANARY_PROMOTE, challenger, tuple(moves), tuple(events), before, after, None, "", who, recorded
    )


def reject_challenger(
    reason: str,
    actor: str | None = None,
    *,
    expected_version: str | int | None = None,
    settings: Settings | None = None,
) -> RegistryChange:
    """End a canary against the challenger: the challenger alias is removed (the champion stays).

    No challenger left is a no-op (a retried task). ``expected_version`` guards against
    rejecting a newer challenger than the one the canary watched: nothing moves then.

    Raises:
        RegistryError: the challenger is not the expected version.
    """
    reg = _open(settings)
    who = _actor(actor)
    expected = None if expected_version is None else str(expected_version)
    with reg.audit.locked(reg.name) as session:
        before = _aliases(reg)
        challenger = before.get(CHALLENGER)
        if challenger is None:
            return RegistryChange(
                reg.name,
                OP_CANARY_REJECT,
                expected,
                (),
                (),
                before,
                dict(before),
                note="no challenger: nothing to move",
                actor=who,
                reason=reason,
            )
        if expected is not None and challenger != expected:
            raise RegistryError(
                f"the challenger of {reg.name!r} is v{challenger}, not the v{expected} the canary watched; "
                "nothing moved"
            )
        moves = [AliasMove(CHALLENGER, challenger, None)]
        recorded = f"{reason} [canary: challenger v{challenger} rolled back; champion v{before.get(CHAMPION)} stays]"
        events = _apply(reg, session, moves, actor=who, reason=recorded, operation=OP_CANARY_REJECT)
        after = _aliases(reg)
    return RegistryChange(
        reg.name, OP_CANARY_REJECT, challenger, tuple(moves), tuple(events), before, after, None, "", who, recorded
    )


def alias_history(*, alias: str | None = None, settings: Settings | None = None) -> list[AliasEvent]:
    """Every recorded move of the model's aliases (or of one alias), oldest first."""
    from fraudops.registry.audit import AuditLog
    from fraudops.settings import get_settings

    cfg = settings if settings is not None else get_settings()
    return AuditLog(cfg.tracking_uri).events(cfg.model_name, alias)


def version_at_time(alias: str, at: datetime, *, settings: Settings | None = None) -> str | None:
    """Which version held ``alias`` at time ``at`` (naive times are UTC); ``None`` if none did."""
    return version_at(alias_history(alias=alias, settings=settings), alias, at)


def current_aliases(settings: Settings | None = None) -> dict[str, str]:
    """The aliases of the registered model now (alias -> version)."""
    return _aliases(_open(settings))


def describe(*, limit: int = 20, settings: Settings | None = None) -> dict[str, Any]:
    """The registered model at a glance: aliases and the newest versions with their lineage."""
    from mlflow.exceptions import MlflowException

    reg = _open(settings)
    aliases = _aliases(reg)
    by_version: dict[str, list[str]] = {}
    for alias, ver in aliases.items():
        by_version.setdefault(ver, []).append(alias)
    try:
        found = reg.client.search_model_versions(
            f"name = '{_quoted(reg.name)}'", max_results=limit, order_by=["version_number DESC"]
        )
    except MlflowException as exc:
        raise _mlflow_error(exc, f"listing versions of {reg.name!r}") from exc
    versions = []
    for mv in found:
        tags = mv.tags or {}
        versions.append(
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
                "status": str(mv.status),
                "run_id": mv.run_id,
                AUC_KEY: tags.get(AUC_KEY),
                "threshold": tags.get("threshold"),
                "data_version": tags.get("data_version"),
                "feature_schema_version": tags.get("feature_schema_version"),
                "gate_passed": tags.get("gate_passed"),
            }
        )
    return {"model_name": reg.name, "aliases": aliases, "versions": versions}


def describe_version(version: str | int, *, settings: Settings | None = None) -> dict[str, Any]:
    """One version in full: tags (lineage, metrics, gate decision), aliases held, run id, source."""
    reg = _open(settings)
    mv = _model_version(reg, str(version))
    aliases = _aliases(reg)
    return {
        "model_name": reg.name,
        "version": str(mv.version),
        "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
        "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
        "status": str(mv.status),
        "run_id": mv.run_id,
        "source": mv.source,
        "description": mv.description or "",
        "tags": dict(sorted((mv.tags or {}).items())),
    }


__all__ = [
    "RegistryChange",
    "alias_history",
    "current_aliases",
    "default_actor",
    "describe",
    "describe_version",
    "periods",
    "promote",
    "promote_challenger_to_champion",
    "reject_challenger",
    "rollback",
    "version_at_time",
]
