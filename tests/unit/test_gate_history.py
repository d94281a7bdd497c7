"""Pure parts around the gate: which aliases a passed gate moves, and the alias history
(version at a time, periods, rollback target, consistency)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fraudops.registry.history import (
    CHALLENGER,
    CHAMPION,
    OP_CANARY_PROMOTE,
    OP_PROMOTE,
    OP_ROLLBACK,
    AliasEvent,
    AliasMove,
    RollbackError,
    chain_problems,
    champion_stack,
    periods,
    plan_promotion,
    rollback_target,
    version_at,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ev(
    i: int, alias: str, frm: str | None, to: str | None, op: str = OP_PROMOTE, minutes: float | None = None
) -> AliasEvent:
    move = AliasMove(alias, frm, to)
    when = T0 + timedelta(minutes=i * 10 if minutes is None else minutes)
    return AliasEvent(i, "fraud-detector", alias, move.action, frm, to, "ops", f"r{i}", op, f"op{i}", when)


# -- plan_promotion ------------------------------------------------------------------------


def test_first_promotion_makes_champion_directly() -> None:
    assert plan_promotion({}, "1", skip_canary=False) == [AliasMove(CHAMPION, None, "1")]


def test_with_a_champion_the_version_becomes_challenger() -> None:
    assert plan_promotion({CHAMPION: "1"}, "2", skip_canary=False) == [AliasMove(CHALLENGER, None, "2")]


def test_a_newer_challenger_replaces_the_old_one() -> None:
    moves = plan_promotion({CHAMPION: "1", CHALLENGER: "2"}, "3", skip_canary=False)
    assert moves == [AliasMove(CHALLENGER, "2", "3")]
    assert moves[0].action == "move"


def test_skip_canary_moves_champion_and_clears_the_challenger() -> None:
    moves = plan_promotion({CHAMPION: "1", CHALLENGER: "2"}, "3", skip_canary=True)
    assert moves == [AliasMove(CHAMPION, "1", "3"), AliasMove(CHALLENGER, "2", None)]
    assert [m.action for m in moves] == ["move", "delete"]


def test_skip_canary_of_the_current_challenger() -> None:
    moves = plan_promotion({CHAMPION: "1", CHALLENGER: "2"}, "2", skip_canary=True)
    assert moves == [AliasMove(CHAMPION, "1", "2"), AliasMove(CHALLENGER, "2", None)]


@pytest.mark.parametrize(
    ("aliases", "version", "skip"),
    [({CHAMPION: "1"}, "1", False), ({CHAMPION: "1"}, "1", True), ({CHAMPION: "1", CHALLENGER: "2"}, "2", False)],
)
def test_repeated_promotion_is_a_no_op(aliases: dict[str, str], version: str, skip: bool) -> None:
    assert plan_promotion(aliases, version, skip_canary=skip) == []


# -- version_at / periods ------------------------------------------------------------------

HISTORY = [
    ev(1, CHAMPION, None, "1"),  # 12:10
    ev(2, CHALLENGER, None, "2"),  # 12:20
    ev(3, CHAMPION, "1", "2", OP_CANARY_PROMOTE),  # 12:30
    ev(4, CHALLENGER, "2", None, OP_CANARY_PROMOTE),  # 12:40
    ev(5, CHAMPION, "2", "1", OP_ROLLBACK),  # 12:50
]


def test_version_at_answers_which_version_held_an_alias() -> None:
    assert version_at(HISTORY, CHAMPION, T0) is None  # before any record
    assert version_at(HISTORY, CHAMPION, T0 + timedelta(minutes=15)) == "1"
    assert version_at(HISTORY, CHAMPION, T0 + timedelta(minutes=30)) == "2"  # the instant of the move
    assert version_at(HISTORY, CHAMPION, T0 + timedelta(minutes=49, seconds=59)) == "2"
    assert version_at(HISTORY, CHAMPION, T0 + timedelta(days=3)) == "1"
    assert version_at(HISTORY, CHALLENGER, T0 + timedelta(minutes=25)) == "2"
    assert version_at(HISTORY, CHALLENGER, T0 + timedelta(minutes=45)) is None  # deleted


def test_version_at_takes_naive_times_as_utc_and_other_zones() -> None:
    naive = datetime(2026, 11, 1, 12, 35)
    assert version_at(HISTORY, CHAMPION, naive) == "2"
    from datetime import timezone

    paris = datetime(2026, 11, 1, 13, 15, tzinfo=timezone(timedelta(hours=1)))  # 12:15 UTC
    assert version_at(HISTORY, CHAMPION, paris) == "1"


def test_same_instant_moves_are_ordered_by_id() -> None:
    same = [ev(1, CHAMPION, None, "1", minutes=0), ev(2, CHAMPION, "1", "2", minutes=0)]
    assert version_at(same, CHAMPION, T0) == "2"


def test_periods_tell_who_held_what_when() -> None:
    spans = periods(HISTORY)
    got = [(p.alias, p.version, p.since.minute, None if p.until is None else p.until.minute) for p in spans]
    assert got == [
        (CHAMPION, "1", 10, 30),
        (CHALLENGER, "2", 20, 40),
        (CHAMPION, "2", 30, 50),
        (CHAMPION, "1", 50, None),
    ]
    assert spans[-1].operation == OP_ROLLBACK


# -- rollback target -----------------------------------------------------------------------


def test_rollback_goes_to_the_previous_champion() -> None:
    events = [ev(1, CHAMPION, None, "1"), ev(2, CHAMPION, "1", "2"), ev(3, CHAMPION, "2", "3")]
    assert rollback_target(events, "3") == "2"


def test_rolling_back_twice_goes_two_champions_back() -> None:
    events = [
        ev(1, CHAMPION, None, "1"),
        ev(2, CHAMPION, "1", "2"),
        ev(3, CHAMPION, "2", "3"),
        ev(4, CHAMPION, "3", "2", OP_ROLLBACK),
    ]
    assert champion_stack(events) == ["1", "2"]
    assert rollback_target(events, "2") == "1"


def test_challenger_moves_do_not_count() -> None:
    events = [ev(1, CHAMPION, None, "1"), ev(2, CHALLENGER, None, "2"), ev(3, CHALLENGER, "2", None)]
    with pytest.raises(RollbackError, match="first recorded champion"):
        rollback_target(events, "1")


def test_rollback_without_champion_or_history_is_refused() -> None:
    with pytest.raises(RollbackError, match="no champion"):
        rollback_target([], None)
    with pytest.raises(RollbackError, match="no recorded champion history"):
        rollback_target([], "4")


def test_rollback_refuses_when_the_alias_was_moved_outside_fraudops() -> None:
    events = [ev(1, CHAMPION, None, "1"), ev(2, CHAMPION, "1", "2")]
    with pytest.raises(RollbackError, match="moved outside fraudops"):
        rollback_target(events, "7")


def test_a_deleted_champion_clears_the_stack() -> None:
    events = [ev(1, CHAMPION, None, "1"), ev(2, CHAMPION, "1", None), ev(3, CHAMPION, None, "2")]
    assert champion_stack(events) == ["2"]


# -- consistency ---------------------------------------------------------------------------


def test_a_consistent_history_has_no_problems() -> None:
    assert chain_problems(HISTORY, {CHAMPION: "1"}) == []


def test_a_broken_chain_and_a_stale_alias_are_reported() -> None:
    broken = [ev(1, CHAMPION, None, "1"), ev(2, CHAMPION, None, "2")]  # a lost update: "from none" twice
    problems = chain_problems(broken, {CHAMPION: "2", CHALLENGER: "3"})
    assert any("event 2" in p for p in problems)
    assert any("challenger" in p and "no recorded move" in p for p in problems)
    assert chain_problems(HISTORY, {CHAMPION: "2"})  # the registry disagrees with the last record


def test_event_serialization() -> None:
    d = HISTORY[0].to_dict()
    assert d["moved_at"] == "2026-11-01T12:10:00+00:00"
    assert d["action"] == "set"
    assert periods(HISTORY)[-1].to_dict()["until"] is None
