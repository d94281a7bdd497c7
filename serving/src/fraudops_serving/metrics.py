"""Prometheus metrics of the predictor.

The names are the ones docker/observability's alert rules and dashboard query:
``fraudops_requests_total``, ``fraudops_request_latency_seconds`` (histogram),
``fraudops_predictions_total{variant,decision}``, ``fraudops_errors_total`` and
``fraudops_served_model_info``. Each app gets its own registry (tests create many apps
in one process); label children are resolved once, so the hot path does no label lookup.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond resolution where the predictor lives, up to the 50 ms SLA and beyond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VARIANTS = ("champion", "challenger", "shadow")


class Metrics:
    """Every metric of one app, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fraudops_requests_total",
            "Scoring requests by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "fraudops_request_latency_seconds",
            "Time from request parsed to response built, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "fraudops_predictions_total",
            "Scored rows by variant and decision (1: fraud)",
            ["variant", "decision"],
            registry=r,
        )
        self.errors = Counter(
            "fraudops_errors_total",
            "Failed scoring requests by endpoint and reason",
            ["endpoint", "reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "fraudops_served_model_info",
            "1 for each model version being served, by variant",
            ["variant", "model_name", "model_version"],
            registry=r,
        )
        self.reloads = Counter(
            "fraudops_model_reloads_total",
            "Bundle loads by alias and result (swapped, refused)",
            ["alias", "result"],
            registry=r,
        )
        self.ready = Gauge("fraudops_ready", "1 when a checked champion is served", registry=r)
        self.online = Counter(
            "fraudops_online_features_total",
            "Online card-feature lookups by result (hit, unknown_card, timeout, error, circuit_open)",
            ["result"],
            registry=r,
        )
        self.online_latency = Histogram(
            "fraudops_online_features_latency_seconds",
            "Time of one online-store round trip",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05),
            registry=r,
        )
        self.log_rows = Counter("fraudops_prediction_log_rows_total", "Rows written to the prediction log", registry=r)
        self.log_pending = Gauge("fraudops_prediction_log_pending_rows", "Rows waiting for the next flush", registry=r)
        self.log_dropped = Counter(
            "fraudops_prediction_log_dropped_rows_total", "Rows dropped because the sink failed too long", registry=r
        )
        self.log_failures = Counter(
            "fraudops_prediction_log_flush_failures_total", "Failed flushes (retried)", registry=r
        )
        self._served_labels: set[tuple[str, str, str]] = set()
        # Hot-path children, resolved once.
        self.predict_latency = self.latency.labels("predict")
        self.batch_latency = self.latency.labels("predict_batch")
        self.predict_ok = self.requests.labels("predict", "200")
        self.batch_ok = self.requests.labels("predict_batch", "200")
        self.by_variant = {(v, d): self.predictions.labels(v, str(d)) for v in VARIANTS for d in (0, 1)}

    def set_served(self, served: dict[str, tuple[str, str]]) -> None:
        """Replace the served-model gauge: ``{variant: (model_name, model_version)}``."""
        for labels in self._served_labels - {(v, n, ver) for v, (n, ver) in served.items()}:
            self.model_info.remove(*labels)
        self._served_labels = {(v, n, ver) for v, (n, ver) in served.items()}
        for labels in self._served_labels:
            self.model_info.labels(*labels).set(1)
        self.ready.set(1 if "champion" in served else 0)
