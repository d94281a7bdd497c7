"""Glue between the monitoring package and the ``fraud_drift_monitoring`` DAG.

* :class:`DriftJobOperator`: the day's drift job (:func:`fraudops.monitoring.job.run_drift_job`)
  for the day of the run's data interval, with the "Drift report" button.
* :func:`slack_webhook_url`: the Slack webhook from the Airflow Connection ``fraudops_slack``
  (its ``password``, or ``extra.webhook_url``); ``None`` when no such connection exists,
  which turns alerting off (said in the log, not an error).
* :func:`brief`: the few figures of a day's summary an operator reads in XCom.

Parse-time module: standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from fraudops.orchestration.assets import DRIFT_RESULTS
from fraudops.orchestration.context import data_interval
from fraudops.orchestration.links import runtime_url
from fraudops.orchestration.reports import (
    AIRFLOW_UI_VARIABLE,
    DEFAULT_AIRFLOW_UI_URL,
    DriftReportLink,
    drift_report_url,
)

log = logging.getLogger(__name__)

SLACK_CONNECTION = "fraudops_slack"
PUSHGATEWAY_VARIABLE = "fraudops_pushgateway_url"
LABELS_VARIABLE = "fraudops_labels_path"


def slack_webhook_url(conn_id: str = SLACK_CONNECTION) -> str | None:
    """The webhook URL of the Slack connection, or ``None`` when it is not configured."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.warning("no Airflow connection %r: drift alerts are not sent", conn_id)
        return None
    url = conn.extra_dejson.get("webhook_url") or conn.password
    if not url and conn.host and str(conn.host).startswith(("http://", "https://")):
        url = conn.host
    if not url:
        raise ValueError(f"connection {conn_id!r} has no webhook URL: put it in its password or extra.webhook_url")
    return str(url)


def optional_variable(key: str) -> str | None:
    """An Airflow Variable, or ``None`` when it is not set."""
    from airflow.sdk import Variable

    value = Variable.get(key, default=None)
    return str(value) if value else None


def brief(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What an operator reads first in a day's drift summary."""
    from fraudops.monitoring.summary import headline  # at run time: DAG files parse with orchestration only

    drift = summary.get("drift") or {}
    alert = summary.get("alert")
    return {
        **headline(summary),
        "dataset_drift": bool(drift.get("dataset_drift", False)),
        "top_drifted": [t.get("feature") for t in drift.get("top_drifted", [])[:5]],
        "alert_reasons": list(summary.get("alert_reasons") or []),
        "alert_delivered": None if alert is None else bool(alert.get("delivered")),
        "alert_error": None if alert is None else alert.get("error"),
        "summary_path": summary.get("summary_path"),
    }


class DriftJobOperator(BaseOperator):
    """The daily drift job for the day of the run's data interval; idempotent by day.

    Reads the champion traffic of that UTC day from the prediction log, compares it with
    the champion's reference profile, writes the summary and the Evidently report, then
    sends the Slack alert (connection ``fraudops_slack``) when the alert level is crossed.
    A Slack failure never loses the results: it is recorded in the summary and reported
    by the next task. Returns :func:`brief`.
    """

    template_fields: Sequence[str] = ("labels_path",)
    operator_extra_links = (DriftReportLink(),)
    ui_color = "#e0ecf8"

    def __init__(self, *, labels_path: str | None = None, report: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [DRIFT_RESULTS])
        super().__init__(**kwargs)
        self.labels_path = labels_path
        self.report = report

    def execute(self, context: Any) -> dict[str, Any]:
        from pathlib import Path

        from fraudops.monitoring.job import run_drift_job
        from fraudops.settings import get_settings

        cfg = get_settings()
        cfg.ensure_home()
        start, _ = data_interval(context)
        day = start.date()
        labels = self.labels_path or optional_variable(LABELS_VARIABLE)
        if not labels and (cfg.home / "labels").exists():
            labels = str(cfg.home / "labels")
        if labels and not Path(labels).exists():
            log.warning("labels path %s does not exist: no quality figures today", labels)
            labels = None
        airflow_ui = runtime_url(AIRFLOW_UI_VARIABLE, "airflow_ui_url", DEFAULT_AIRFLOW_UI_URL)
        report_url = drift_report_url(airflow_ui, str(day))
        summary = run_drift_job(
            day,
            settings=cfg,
            labels=labels,
            report=self.report,
            webhook_url=slack_webhook_url(),
            report_url=report_url,
            pushgateway_url=optional_variable(PUSHGATEWAY_VARIABLE),
        )
        result = brief(summary)
        if summary.get("report"):
            self.drift_report_url = report_url  # read back by DriftReportLink when the task ends
            result["report_url"] = report_url
        log.info(
            "drift %s: %s rows, %s/%s features drifted (share %s), dataset drift %s; report %s",
            result["date"],
            result["n_rows"],
            result["n_drifted"],
            result["n_features"],
            result["drift_share"],
            result["dataset_drift"],
            result.get("report_url"),
        )
        context["outlet_events"][DRIFT_RESULTS].extra = {
            k: result[k] for k in ("date", "status", "model_version", "drift_share", "dataset_drift")
        }
        return result
