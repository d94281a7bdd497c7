"""The drift report, one click from its DAG run.

``fraud_drift_monitoring`` writes ``FRAUDOPS_HOME/monitoring/<day>/report.html``; the
fraudops plugin serves it under ``<Airflow UI>/fraudops/drift/<day>/report.html`` to
logged-in users, and :class:`DriftReportLink` is the "Drift report" button of the task
that wrote it.

Parse-time module: standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

REPORTS_URL_PREFIX = "/fraudops"
AIRFLOW_UI_VARIABLE = "fraudops_airflow_ui_url"
DEFAULT_AIRFLOW_UI_URL = "http://localhost:8080"


def drift_report_url(airflow_ui_url: str, day: str, name: str = "report.html") -> str:
    """Where the plugin serves a day's drift report (or ``summary.json``)."""
    return f"{airflow_ui_url.rstrip('/')}{REPORTS_URL_PREFIX}/drift/{day}/{name}"


class DriftReportLink(BaseOperatorLink):
    """The "Drift report" button of the drift task: the Evidently report of its day."""

    name = "Drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return str(getattr(operator, "drift_report_url", "") or "")
