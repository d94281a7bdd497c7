"""Alerts an operator can act on: a Slack message through an incoming webhook.

The webhook URL comes from the caller (an Airflow Connection in the DAG, an option on the
command line); it is a secret and is never logged. Delivery uses httpx with a timeout
and retries with backoff on network errors, 429 and 5xx; other 4xx are not retried (the
URL or the payload is wrong, retrying will not help). :func:`send_slack` never raises:
it returns an :class:`AlertResult` that the caller records next to the drift results,
which are written before any alert is attempted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class AlertResult:
    """What happened to one alert: delivered or not, after how many attempts, and why."""

    delivered: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None
    destination: str = ""  # scheme and host only: the path of a webhook URL is its secret

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def redact_url(url: str) -> str:
    """Scheme and host of a URL: what may be logged of a webhook (its path is the secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else "<invalid url>"


def send_slack(
    webhook_url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float = 5.0,
    retries: int = 3,
    backoff_s: float = 0.5,
) -> AlertResult:
    """POST ``payload`` to a Slack incoming webhook; never raises."""
    import httpx

    destination = redact_url(webhook_url)
    if urlsplit(webhook_url).scheme not in ("http", "https"):
        return AlertResult(False, 0, error="webhook URL must be http(s)", destination=destination)
    attempts = 0
    last_error: str | None = None
    status: int | None = None
    with httpx.Client(timeout=httpx.Timeout(timeout_s)) as client:
        for attempt in range(retries + 1):
            attempts = attempt + 1
            try:
                response = client.post(webhook_url, json=payload)
            except httpx.HTTPError as exc:
                status, last_error = None, f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if response.is_success:
                    log.info("alert delivered to %s (attempt %d)", destination, attempts)
                    return AlertResult(True, attempts, status, None, destination)
                last_error = f"HTTP {status}: {response.text[:200]}"
                if status not in RETRY_STATUS:
                    break
            if attempt < retries:
                time.sleep(backoff_s * 2**attempt)
    log.warning("alert NOT delivered to %s after %d attempt(s): %s", destination, attempts, last_error)
    return AlertResult(False, attempts, status, last_error, destination)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def drift_alert_payload(summary: dict[str, Any], *, report_url: str | None = None, top_k: int = 5) -> dict[str, Any]:
    """The Slack message for a day's drift summary (text for notifications, blocks for reading)."""
    drift = summary.get("drift") or {}
    model = f"{summary.get('model_name', '?')} v{summary.get('model_version', '?')}"
    share = drift.get("drift_share")
    n_drifted, n_features = drift.get("n_drifted", 0), drift.get("n_features", 0)
    thresholds = drift.get("thresholds", {})
    top = drift.get("top_drifted", [])[:top_k]
    top_text = ", ".join(f"{t['feature']} (PSI {t['psi']:.2f})" for t in top) or "none"
    reasons = summary.get("alert_reasons") or []
    headline = f"fraudops drift alert: {model}, {summary.get('date')}"
    lines = [
        f"*Drift share:* {_pct(share)} of features ({n_drifted}/{n_features}); "
        f"alert level {_pct(thresholds.get('alert_share'))}, PSI threshold {thresholds.get('psi')}",
        f"*Most drifted:* {top_text}",
    ]
    prediction = summary.get("prediction") or {}
    if prediction.get("psi") is not None:
        lines.append(f"*Score PSI:* {prediction['psi']:.3f}")
    if reasons:
        lines.append("*Why:* " + "; ".join(reasons))
    lines.append(f"*Rows:* {summary.get('n_rows', 0):,}")
    if report_url:
        lines.append(f"*Report:* <{report_url}|open the Evidently report>")
    text = headline + "\n" + "\n".join(lines).replace("*", "")
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        ],
    }
