"""The promotion gate's decisions: floor, regression, no champion, edge equalities, bad numbers."""

from __future__ import annotations

import json
import math

import pytest

from fraudops.registry.gate import GateDecision, evaluate_gate
from fraudops.settings import GateSettings

FLOOR = 0.85
REG = 0.02


def gate(candidate: float | None, champion: float | None = None, **kw: object) -> GateDecision:
    return evaluate_gate(candidate, champion, floor=FLOOR, max_regression=REG, **kw)  # type: ignore[arg-type]


def test_defaults_match_the_brief() -> None:
    cfg = GateSettings()
    assert (cfg.auc_floor, cfg.max_regression) == (0.85, 0.02)


def test_no_champion_passes_on_the_floor_alone() -> None:
    d = gate(0.90, candidate_version="1")
    assert d.passed
    assert not d.has_champion
    assert d.required_auc == FLOOR
    assert "no champion yet" in d.reason
    assert d.reason.startswith("passed: v1")


def test_below_floor_without_champion_is_rejected() -> None:
    d = gate(0.8499, candidate_version="1")
    assert not d.passed
    assert "0.8499 < floor 0.8500" in d.reason
    assert [c.name for c in d.checks if not c.passed] == ["floor"]


def test_floor_equality_passes() -> None:
    assert gate(0.85).passed


@pytest.mark.parametrize(("candidate", "champion"), [(0.85, 0.87), (0.88, 0.90), (0.91, 0.93), (0.97, 0.99)])
def test_regression_equality_passes(candidate: float, champion: float) -> None:
    d = gate(candidate, champion, champion_version="4")
    assert d.passed, d.reason


def test_regression_equality_survives_floating_point() -> None:
    # 0.5006 - 0.01 is 0.49060000000000004 in binary floating point: a candidate at 0.4906
    # sits exactly on the documented bound and must pass.
    assert 0.5006 - 0.01 > 0.4906
    assert evaluate_gate(0.4906, 0.5006, floor=0.4, max_regression=0.01).passed


def test_just_below_the_regression_bound_is_rejected() -> None:
    assert not gate(0.9099999, 0.93, champion_version="4").passed


def test_regression_beyond_allowance_is_rejected() -> None:
    d = gate(0.9099, 0.93, candidate_version="5", champion_version="4")
    assert not d.passed
    assert "champion v4 0.9300" in d.reason
    assert "= 0.9100" in d.reason
    assert d.required_auc == pytest.approx(0.91)
    assert [c.name for c in d.checks if not c.passed] == ["regression"]


def test_small_regression_within_allowance_passes() -> None:
    d = gate(0.92, 0.93, champion_version="4")
    assert d.passed
    assert d.has_champion


def test_better_than_champion_but_below_floor_is_rejected() -> None:
    # A weak champion does not lower the floor.
    d = gate(0.84, 0.80, champion_version="2")
    assert not d.passed
    assert [c.name for c in d.checks if not c.passed] == ["floor"]
    assert d.required_auc == FLOOR


def test_both_checks_failing_are_both_reported() -> None:
    d = gate(0.80, 0.95, champion_version="2")
    assert not d.passed
    assert {c.name for c in d.checks if not c.passed} == {"floor", "regression"}
    assert "floor" in d.reason and "champion v2" in d.reason


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -0.1, 1.5])
def test_candidate_without_usable_auc_is_rejected(bad: float | None) -> None:
    d = gate(bad, candidate_version="7")
    assert not d.passed
    assert "no usable test AUC-ROC" in d.reason
    assert d.checks[0].name == "candidate_metric"


def test_champion_with_unknown_auc_fails_closed() -> None:
    d = gate(0.99, None, champion_version="3")
    assert not d.passed
    assert d.has_champion
    assert "regression cannot be ruled out" in d.reason


def test_champion_auc_nan_fails_closed() -> None:
    assert not gate(0.99, math.nan, champion_version="3").passed


@pytest.mark.parametrize(("floor", "reg"), [(-0.1, 0.02), (1.1, 0.02), (0.85, -0.01), (math.nan, 0.02)])
def test_bad_configuration_is_an_error_not_a_decision(floor: float, reg: float) -> None:
    with pytest.raises(ValueError, match="within"):
        evaluate_gate(0.9, None, floor=floor, max_regression=reg)


def test_zero_allowance_means_no_regression_at_all() -> None:
    assert evaluate_gate(0.90, 0.90, floor=0.5, max_regression=0.0).passed
    assert not evaluate_gate(0.8999, 0.90, floor=0.5, max_regression=0.0).passed


def test_decision_serializes_to_strict_json() -> None:
    d = gate(math.nan, 0.9, champion_version="1")
    text = json.dumps(d.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["passed"] is False
    assert back["candidate_auc"] is None
    assert back["champion_version"] == "1"
    assert back["checks"][0]["name"] == "candidate_metric"
