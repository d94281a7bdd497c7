"""The promotion gate: a pure decision on numbers, with a reason a person can read.

A candidate passes when its test AUC-ROC is at least the absolute floor and at least the
champion's AUC-ROC minus the allowed regression. With no champion yet, only the floor
applies. The gate fails closed: a candidate without a usable AUC-ROC, or a champion whose
AUC-ROC is unknown (so that a regression cannot be ruled out), is rejected.

Nothing here touches MLflow; :mod:`fraudops.registry.service` gathers the numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# Comparisons allow this much floating-point slack, so that the documented equalities hold:
# 0.87 - 0.02 is 0.8500000000000001 in binary floating point, and a candidate at exactly
# 0.85 must pass against a champion at 0.87. Far below any meaningful AUC difference.
_EPS = 1e-9


@dataclass(frozen=True)
class GateCheck:
    """One condition of the gate and its outcome."""

    name: str  # "floor" | "regression" | "candidate_metric" | "champion_metric"
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """The outcome of the gate for one candidate version.

    ``passed`` is the verdict; ``reason`` says why in one line; ``checks`` holds each
    condition separately for machines (Airflow XCom, the audit log, tags).
    """

    passed: bool
    reason: str
    candidate_auc: float | None
    champion_auc: float | None
    floor: float
    max_regression: float
    candidate_version: str | None = None
    champion_version: str | None = None
    checks: tuple[GateCheck, ...] = ()

    @property
    def has_champion(self) -> bool:
        """Whether there was a champion to compare with."""
        return self.champion_version is not None or self.champion_auc is not None

    @property
    def required_auc(self) -> float:
        """The smallest AUC-ROC that would have passed (floor and regression together)."""
        if self.champion_auc is None or not _usable(self.champion_auc):
            return self.floor
        return max(self.floor, self.champion_auc - self.max_regression)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (NaN becomes None, so strict JSON parsers accept it)."""
        out = asdict(self)
        for key in ("candidate_auc", "champion_auc"):
            value = out[key]
            if value is not None and not math.isfinite(value):
                out[key] = None
        out["required_auc"] = self.required_auc
        out["has_champion"] = self.has_champion
        return out


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and 0.0 <= value <= 1.0


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def evaluate_gate(
    candidate_auc: float | None,
    champion_auc: float | None = None,
    *,
    floor: float,
    max_regression: float,
    candidate_version: str | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """Decide whether a candidate may be promoted.

    Args:
        candidate_auc: the candidate's test AUC-ROC; ``None`` or NaN rejects it.
        champion_auc: the current champion's test AUC-ROC, or ``None`` when there is no
            champion. A champion that exists (``champion_version`` given) but has no
            usable AUC-ROC rejects the candidate: a regression cannot be ruled out.
        floor: the absolute floor (``settings.gate.auc_floor``); equality passes.
        max_regression: the allowed drop below the champion (``settings.gate.max_regression``);
            equality passes.
        candidate_version, champion_version: version numbers, for the reason text.

    Raises:
        ValueError: ``floor`` or ``max_regression`` outside [0, 1] (a configuration error,
            not a gate outcome).
    """
    if not (math.isfinite(floor) and 0.0 <= floor <= 1.0):
        raise ValueError(f"gate floor must be within [0, 1], got {floor!r}")
    if not (math.isfinite(max_regression) and 0.0 <= max_regression <= 1.0):
        raise ValueError(f"gate max_regression must be within [0, 1], got {max_regression!r}")

    cand = f"v{candidate_version}" if candidate_version else "candidate"
    champ = f"champion v{champion_version}" if champion_version else "champion"
    has_champion = champion_version is not None or champion_auc is not None
    checks: list[GateCheck] = []

    if not _usable(candidate_auc):
        detail = f"{cand} has no usable test AUC-ROC ({_fmt(candidate_auc)}); the gate cannot pass it"
        checks.append(GateCheck("candidate_metric", False, detail))
        return GateDecision(
            False,
            f"rejected: {detail}",
            candidate_auc,
            champion_auc,
            floor,
            max_regression,
            candidate_version,
            champion_version,
            tuple(checks),
        )
    assert candidate_auc is not None  # narrowed by _usable, for the type checker

    floor_ok = candidate_auc + _EPS >= floor
    checks.append(
        GateCheck(
            "floor",
            floor_ok,
            f"test AUC-ROC {candidate_auc:.4f} {'>=' if floor_ok else '<'} floor {floor:.4f}",
        )
    )

    if has_champion:
        if not _usable(champion_auc):
            checks.append(
                GateCheck(
                    "champion_metric",
                    False,
                    f"{champ} has no usable test AUC-ROC ({_fmt(champion_auc)}), so a regression cannot be ruled out",
                )
            )
        else:
            assert champion_auc is not None
            required = champion_auc - max_regression
            reg_ok = candidate_auc + _EPS >= required
            checks.append(
                GateCheck(
                    "regression",
                    reg_ok,
                    f"test AUC-ROC {candidate_auc:.4f} {'>=' if reg_ok else '<'} {champ} "
                    f"{champion_auc:.4f} - allowed regression {max_regression:.4f} = {required:.4f}",
                )
            )
    else:
        checks.append(GateCheck("regression", True, "no champion yet: only the floor applies"))

    passed = all(c.passed for c in checks)
    if passed:
        reason = f"passed: {cand} " + "; ".join(c.detail for c in checks)
    else:
        reason = f"rejected: {cand} " + "; ".join(c.detail for c in checks if not c.passed)
    return GateDecision(
        passed,
        reason,
        candidate_auc,
        champion_auc,
        floor,
        max_regression,
        candidate_version,
        champion_version,
        tuple(checks),
    )
