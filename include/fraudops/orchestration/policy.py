"""The policy every fraudops DAG follows: owner, retries with a delay, a fixed start date, tags.

Parse-time module: standard library only.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

OWNER = "fraudops-ml"
# Fixed and timezone-aware: a moving start date (``now() - 1 day``) changes the DAG at
# every parse and makes the scheduler's interval arithmetic unpredictable.
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
BASE_TAGS = ("fraudops",)
DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY = timedelta(minutes=5)
# A cap on retries for one-shot runs (`fraudops airflow demo`, the end-to-end tests), where
# a failure must show at once rather than after minutes of retry delays.
RETRIES_CAP_ENV = "FRAUDOPS_AIRFLOW_MAX_RETRIES"


def capped_retries(wanted: int) -> int:
    """``wanted``, capped by ``FRAUDOPS_AIRFLOW_MAX_RETRIES`` when that is set."""
    cap = os.environ.get(RETRIES_CAP_ENV, "").strip()
    if not cap:
        return wanted
    if not cap.isdigit():
        raise ValueError(f"{RETRIES_CAP_ENV}={cap!r}: expected a number of retries (0 or more)")
    return min(wanted, int(cap))


def default_args(
    *,
    retries: int = DEFAULT_RETRIES,
    retry_delay: timedelta = DEFAULT_RETRY_DELAY,
    **extra: Any,
) -> dict[str, Any]:
    """The ``default_args`` of a fraudops DAG.

    Retries cover what is transient (a database or registry that blips); tasks raise
    ``AirflowFailException`` for what a retry cannot fix (a failed data-validation gate,
    a rejected bundle), so those fail at once.
    """
    return {
        "owner": OWNER,
        "retries": capped_retries(retries),
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        **extra,
    }


def tags(*more: str) -> list[str]:
    """The DAG's tags: ``fraudops`` and what the DAG is about."""
    return [*BASE_TAGS, *more]
