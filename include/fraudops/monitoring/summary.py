"""The headline of a day's drift summary: standard library only (imported at DAG parse time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a day's summary that every view of it starts with (CLI, DAG task result)."""
    drift = summary.get("drift") or {}
    return {
        "date": summary.get("date"),
        "status": summary.get("status"),
        "n_rows": summary.get("n_rows"),
        "model_version": summary.get("model_version"),
        "drift_share": drift.get("drift_share"),
        "n_drifted": drift.get("n_drifted"),
        "n_features": drift.get("n_features"),
        "score_psi": (summary.get("prediction") or {}).get("psi"),
        "auc_roc": ((summary.get("quality") or {}).get("overall") or {}).get("auc_roc"),
    }
