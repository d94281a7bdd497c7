"""Reading times from a task's Airflow context, as the rest of fraudops expects them.

Airflow hands tasks ``pendulum`` datetimes; the package works with plain, timezone-aware
``datetime`` objects in UTC (pendulum's arithmetic and ``isoformat`` misbehave with the
standard library's ``UTC``). Every DAG task converts here, once.

Parse-time module: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def utc_datetime(value: Any) -> datetime:
    """A plain ``datetime`` in UTC from a datetime (pendulum or not) or an ISO string.

    A naive value is taken as UTC (Airflow's convention).
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or an ISO 8601 string, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


def data_interval(context: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """The run's data interval, in UTC; an error for a run without one."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        raise ValueError("this run has no data interval: trigger it with a logical date")
    return utc_datetime(start), utc_datetime(end)


def run_time(context: Mapping[str, Any]) -> datetime:
    """The time the run stands for: the end of its data interval, else its logical date, else ``run_after``."""
    for key in ("data_interval_end", "logical_date"):
        if context.get(key) is not None:
            return utc_datetime(context[key])
    return utc_datetime(context["dag_run"].run_after)
