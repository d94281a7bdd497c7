"""docker/observability: the Prometheus config, alert rules and Grafana dashboard parse and use real metric names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fraudops.monitoring import metrics

OBS = Path(__file__).resolve().parents[2] / "docker" / "observability"

# What the predictor exposes (the serving engineer uses these names) and what the drift job pushes.
PREDICTOR_METRICS = {
    "fraudops_requests_total",
    "fraudops_request_latency_seconds",
    "fraudops_predictions_total",
    "fraudops_errors_total",
    "fraudops_served_model_info",
}
DRIFT_METRICS = {
    metrics.DRIFT_SHARE,
    metrics.DRIFT_DATASET,
    metrics.DRIFT_FEATURES,
    metrics.DRIFT_SCORE_PSI,
    metrics.DRIFT_ROWS,
    metrics.DRIFT_LAST_RUN,
}
KNOWN = PREDICTOR_METRICS | DRIFT_METRICS
_NAME = re.compile(r"\bfraudops_[a-z0-9_]+")


def _metric_names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in _NAME.findall(expr)}


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in re.sub(r'"[^"]*"', "", expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((OBS / "alert_rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((OBS / "grafana" / "dashboards" / "fraudops.json").read_text())
    return result


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_prometheus_scrapes_the_predictor_and_the_pushgateway() -> None:
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["fraudops-predictor"]["metrics_path"] == "/metrics"
    assert jobs["fraudops-pushgateway"]["honor_labels"] is True
    for rule_file in config["rule_files"]:
        assert (OBS / Path(rule_file).name).is_file()
    for name in ("prometheus.yml", "fraudops.yml"):
        found = list((OBS / "grafana" / "provisioning").rglob(name))
        assert found and yaml.safe_load(found[0].read_text())["apiVersion"] == 1


def test_alert_rules_are_well_formed_and_cover_errors_latency_and_drift(rules: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    used: set[str] = set()
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert _balanced(rule["expr"]), rule["alert"]
        used |= _metric_names(rule["expr"])
    assert used <= KNOWN, used - KNOWN
    assert {"fraudops_errors_total", "fraudops_request_latency_seconds", metrics.DRIFT_SHARE} <= used
    by_name = {r["alert"]: r for r in rules}
    assert "0.5" in by_name["FraudopsDriftAlert"]["expr"] and "0.3" in by_name["FraudopsDatasetDrift"]["expr"]
    assert "0.05" in by_name["FraudopsPredictorLatencyP95"]["expr"]  # the 50 ms SLA


def test_grafana_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and _balanced(target["expr"]), panel["title"]
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Traffic by variant", "Latency percentiles", "Decisions by variant", "Drift share per day"} <= titles


def test_dashboard_uses_every_predictor_metric_and_the_drift_gauge(dashboard: dict[str, Any]) -> None:
    used = set().union(*(_metric_names(e) for e in _dashboard_exprs(dashboard)))
    assert used <= KNOWN, used - KNOWN
    assert PREDICTOR_METRICS | {metrics.DRIFT_SHARE} <= used
    traffic = next(p for p in dashboard["panels"] if p["title"] == "Traffic by variant")
    assert "by (variant)" in traffic["targets"][0]["expr"]
    latency = next(p for p in dashboard["panels"] if p["title"] == "Latency percentiles")
    assert {t["legendFormat"] for t in latency["targets"]} == {"p50", "p95", "p99"}


def test_drift_exposition_is_valid_prometheus_text() -> None:
    summary = {
        "model_name": "fraud-detector",
        "model_version": '3"x',  # a quote in a label value must be escaped
        "n_rows": 1000,
        "interval": {"end": "2026-10-21T00:00:00+00:00"},
        "drift": {"drift_share": 0.62, "dataset_drift": True, "n_drifted": 78},
        "prediction": {"psi": 1.5},
    }
    families = {f.name: f for f in text_string_to_metric_families(metrics.drift_metrics_text(summary))}
    assert set(families) == DRIFT_METRICS
    sample = families[metrics.DRIFT_SHARE].samples[0]
    assert sample.value == 0.62 and sample.labels == {"model_name": "fraud-detector", "model_version": '3"x'}
    assert families[metrics.DRIFT_LAST_RUN].samples[0].value == 1792540800.0
