"""The model registry: the promotion gate, alias moves, their audit history, rollback.

Registry aliases only (``champion`` takes the traffic, ``challenger`` the canary share);
the deprecated stages are never used. Every alias move is serialized by a lock that works
across processes and machines and is recorded in an append-only history (see
:mod:`fraudops.registry.audit` for where it lives and why).

Importing this package is cheap: MLflow and SQLAlchemy load when an operation runs.
"""

from __future__ import annotations

from fraudops.registry.errors import (
    RegistryConfigError,
    RegistryError,
    RegistryLockTimeout,
    RegistryNotFound,
    RegistryUnavailable,
)
from fraudops.registry.gate import GateCheck, GateDecision, evaluate_gate
from fraudops.registry.history import (
    CHALLENGER,
    CHAMPION,
    AliasEvent,
    AliasMove,
    AliasPeriod,
    chain_problems,
    periods,
    plan_promotion,
    rollback_target,
    version_at,
)
from fraudops.registry.service import (
    RegistryChange,
    alias_history,
    current_aliases,
    default_actor,
    describe,
    describe_version,
    promote,
    promote_challenger_to_champion,
    reject_challenger,
    rollback,
    version_at_time,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "AliasEvent",
    "AliasMove",
    "AliasPeriod",
    "GateCheck",
    "GateDecision",
    "RegistryChange",
    "RegistryConfigError",
    "RegistryError",
    "RegistryLockTimeout",
    "RegistryNotFound",
    "RegistryUnavailable",
    "alias_history",
    "chain_problems",
    "current_aliases",
    "default_actor",
    "describe",
    "describe_version",
    "evaluate_gate",
    "periods",
    "plan_promotion",
    "promote",
    "promote_challenger_to_champion",
    "reject_challenger",
    "rollback",
    "rollback_target",
    "version_at",
    "version_at_time",
]
