"""Prometheus metrics of the predictor.

The names are the ones docker/observability's alert rules and dashboard query:
``fraudops_requests_total``, ``fraudops_request_latency_seconds`` (histogram),
``fraudops_predictions_total{variant,decision}``, ``fraudops_errors_total`` and
``fraudops_served_model_info``. Each app gets its own registry (tests create many apps
in one process); label children are resolved once, so the hot path does no label lookup.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Sub-millisecond resolution where the predictor lives, up to the 50 ms SLA and beyond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VARIANTS = ("champion", "challenger", "shadow")


ENDPOINTS = ("predict", "predict_batch")


class Endpoint:
    """Requests answered 200 by one scoring endpoint, with their latency histogram."""

    __slots__ = ("buckets", "ok", "seconds")

    def __init__(self) -> None:
        self.ok = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket (the last: +Inf), not cumulative
        self.seconds = 0.0


class ScoringCounts(Collector):
    """``fraudops_requests_total``, ``fraudops_request_latency_seconds`` and
    ``fraudops_predictions_total``, in plain numbers.

    Every scoring request is counted and timed, every micro-batch's rows counted by
    decision; prometheus_client's Counter and Histogram spend more per update (label
    checks, exemplars, a lock each; a histogram two) than the rest of a request's
    accounting. The handlers and the micro-batch callbacks all run on the event loop's
    thread, and ``/metrics`` reads the counts there too, so plain numbers are enough for
    requests; predictions are also counted by shadow scoring in worker threads, so they
    take one plain lock. This collector exposes them as the same metric families.
    """

    def __init__(self) -> None:
        self.endpoints = {name: Endpoint() for name in ENDPOINTS}
        self.refused: dict[tuple[str, str], int] = {}  # (endpoint, HTTP status) -> requests
        self._predictions = {(v, d): 0 for v in VARIANTS for d in (0, 1)}  # (variant, decision) -> rows
        self._lock = threading.Lock()

    def predicted(self, variant: str, rows: int, fraud: int) -> None:
        """``rows`` scored by ``variant``, ``fraud`` of them with decision 1."""
        with self._lock:
            counts = self._predictions
            counts[variant, 1] += fraud
            counts[variant, 0] += rows - fraud

    def answered(self, endpoint: Endpoint, seconds: float) -> None:
        """One request answered 200 after ``seconds``."""
        endpoint.ok += 1
        endpoint.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        endpoint.seconds += seconds

    def failed(self, endpoint: str, status: int) -> None:
        key = (endpoint, str(status))
        self.refused[key] = self.refused.get(key, 0) + 1

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("fraudops_requests", "Scoring requests by endpoint and HTTP status")
        yield HistogramMetricFamily("fraudops_request_latency_seconds", "Time from request parsed to response built")
        yield CounterMetricFamily("fraudops_predictions", "Scored rows by variant and decision (1: fraud)")

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "fraudops_requests", "Scoring requests by endpoint and HTTP status", labels=["endpoint", "status"]
        )
        counts = {(name, "200"): e.ok for name, e in self.endpoints.items() if e.ok} | self.refused
        for (name, status), n in sorted(counts.items()):
            requests.add_metric([name, status], n)
        yield requests
        latency = HistogramMetricFamily(
            "fraudops_request_latency_seconds",
            "Time from request parsed to response built, by endpoint",
            labels=["endpoint"],
        )
        bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for name, e in self.endpoints.items():
            latency.add_metric([name], list(zip(bounds, accumulate(e.buckets), strict=True)), e.seconds)
        yield latency
        predictions = CounterMetricFamily(
            "fraudops_predictions", "Scored rows by variant and decision (1: fraud)", labels=["variant", "decision"]
        )
        with self._lock:
            predicted = dict(self._predictions)
        for (variant, decision), n in predicted.items():
            predictions.add_metric([variant, str(decision)], n)
        yield predictions


class Metrics:
    """Every metric of one app, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.scoring = ScoringCounts()
        r.register(self.scoring)
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
        self.predict = self.scoring.endpoints["predict"]
        self.batch = self.scoring.endpoints["predict_batch"]

    def set_served(self, served: dict[str, tuple[str, str]]) -> None:
        """Replace the served-model gauge: ``{variant: (model_name, model_version)}``."""
        for labels in self._served_labels - {(v, n, ver) for v, (n, ver) in served.items()}:
            self.model_info.remove(*labels)
        self._served_labels = {(v, n, ver) for v, (n, ver) in served.items()}
        for labels in self._served_labels:
            self.model_info.labels(*labels).set(1)
        self.ready.set(1 if "champion" in served else 0)
