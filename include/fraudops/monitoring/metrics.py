"""The drift job's figures as Prometheus metrics.

The drift job is a batch job, so its gauges are pushed to a Prometheus Pushgateway (the
scrape configuration in ``docker/observability/`` scrapes it with ``honor_labels``) and
also written next to the day's results as ``metrics.prom`` (the text format, usable by
node-exporter's textfile collector). The predictor exposes its own metrics
(``fraudops_requests_total``, ``fraudops_request_latency_seconds``,
``fraudops_predictions_total``, ``fraudops_errors_total``, ``fraudops_served_model_info``).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fraudops.monitoring.alerts import AlertResult, redact_url

log = logging.getLogger(__name__)

DRIFT_SHARE = "fraudops_drift_share"
DRIFT_DATASET = "fraudops_drift_dataset_drift"
DRIFT_FEATURES = "fraudops_drift_features_drifted"
DRIFT_SCORE_PSI = "fraudops_drift_score_psi"
DRIFT_ROWS = "fraudops_drift_rows"
DRIFT_LAST_RUN = "fraudops_drift_last_run_timestamp_seconds"
PUSH_JOB = "fraud_drift_monitoring"

_HELP = {
    DRIFT_SHARE: "Share of features whose PSI crossed the drift threshold, last drift run",
    DRIFT_DATASET: "1 when the last drift run found dataset drift",
    DRIFT_FEATURES: "Number of drifted features, last drift run",
    DRIFT_SCORE_PSI: "PSI of the score distribution against the validation scores, last drift run",
    DRIFT_ROWS: "Logged champion rows the last drift run compared",
    DRIFT_LAST_RUN: "Unix time of the end of the interval the last drift run covered",
}


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def drift_metrics_text(summary: dict[str, Any]) -> str:
    """The Prometheus text exposition of a day's drift summary."""
    from datetime import datetime

    drift = summary.get("drift") or {}
    prediction = summary.get("prediction") or {}
    labels = (
        f'model_name="{_label_value(str(summary.get("model_name", "")))}",'
        f'model_version="{_label_value(str(summary.get("model_version", "")))}"'
    )
    end = summary.get("interval", {}).get("end")
    values: dict[str, float | None] = {
        DRIFT_SHARE: drift.get("drift_share"),
        DRIFT_DATASET: 1.0 if drift.get("dataset_drift") else 0.0,
        DRIFT_FEATURES: drift.get("n_drifted"),
        DRIFT_SCORE_PSI: prediction.get("psi"),
        DRIFT_ROWS: summary.get("n_rows", 0),
        DRIFT_LAST_RUN: datetime.fromisoformat(end).timestamp() if end else None,
    }
    lines: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {float(value)!r}"]
    return "\n".join(lines) + "\n"


def push_drift_metrics(gateway_url: str, summary: dict[str, Any], *, timeout_s: float = 5.0) -> AlertResult:
    """PUT the drift gauges to a Pushgateway (replacing this job's group); never raises."""
    import httpx

    model = quote(str(summary.get("model_name", "unknown")), safe="")
    url = f"{gateway_url.rstrip('/')}/metrics/job/{PUSH_JOB}/model_name/{model}"
    try:
        response = httpx.put(
            url,
            content=drift_metrics_text(summary).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        log.warning("pushing drift metrics to %s failed: %s", redact_url(gateway_url), exc)
        return AlertResult(False, 1, None, f"{type(exc).__name__}: {exc}", redact_url(gateway_url))
    ok = response.is_success
    if not ok:
        log.warning("pushing drift metrics to %s: HTTP %d", redact_url(gateway_url), response.status_code)
    return AlertResult(
        ok, 1, response.status_code, None if ok else f"HTTP {response.status_code}", redact_url(gateway_url)
    )
