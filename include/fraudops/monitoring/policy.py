"""Decisions as pure functions over given facts: drift-triggered retraining and the canary.

The DAGs gather the facts (the drift summary, the time of the last drift-triggered
training, whether a training run is under way, each variant's logged traffic and error
counts) and carry out the decision (trigger ``fraud_training``, move the aliases).
Nothing here reads a clock, a registry or Airflow, so every branch is testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from fraudops.monitoring import predlog
from fraudops.monitoring.binning import as_f32, bin_counts, drop_nan, fit_bins, proportions, psi
from fraudops.monitoring.quality import classification_quality, join_labels

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops.settings import Settings

# --------------------------------------------------------------------------- retraining


@dataclass(frozen=True, slots=True)
class RetrainDecision:
    """Whether to trigger ``fraud_training``, why, and the run configuration to pass."""

    trigger: bool
    reason: str
    conf: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_retraining(
    summary: Mapping[str, Any],
    *,
    now: datetime,
    last_triggered_at: datetime | None,
    training_running: bool,
    cooldown_hours: float,
) -> RetrainDecision:
    """Dataset drift triggers retraining, unless one runs already or the cooldown holds.

    ``summary`` is the drift job's daily summary; ``now`` is the reference time of the
    deciding run (the end of its data interval in a DAG); ``last_triggered_at`` is when
    drift last triggered a training run (None: never).
    """
    if now.tzinfo is None or (last_triggered_at is not None and last_triggered_at.tzinfo is None):
        raise ValueError("times must be timezone-aware")
    drift = summary.get("drift") or {}
    share = drift.get("drift_share")
    if summary.get("status") != "ok" or not summary.get("n_rows"):
        return RetrainDecision(False, f"no decision: drift job status {summary.get('status')!r}, no traffic")
    if not drift.get("dataset_drift"):
        limit = (drift.get("thresholds") or {}).get("dataset_share")
        return RetrainDecision(False, f"no dataset drift: {share:.0%} of features drifted (limit {limit:.0%})")
    if training_running:
        return RetrainDecision(False, "dataset drift, but a training run is already under way")
    if last_triggered_at is not None:
        next_allowed = last_triggered_at + timedelta(hours=cooldown_hours)
        if now < next_allowed:
            return RetrainDecision(
                False,
                f"dataset drift, but in cooldown: drift last triggered training at "
                f"{last_triggered_at.isoformat()}, next allowed from {next_allowed.isoformat()}",
            )
    top = ", ".join(t["feature"] for t in drift.get("top_drifted", [])[:5])
    reason = (
        f"dataset drift on {summary.get('date')}: {share:.0%} of features drifted "
        f"({drift.get('n_drifted')}/{drift.get('n_features')}), most: {top}"
    )
    conf = {
        "reason": "drift",
        "reason_text": reason,
        "triggered_by": "fraud_drift_monitoring",
        "drift_summary": {
            "date": summary.get("date"),
            "model_name": summary.get("model_name"),
            "model_version": summary.get("model_version"),
            "n_rows": summary.get("n_rows"),
            "drift_share": share,
            "n_drifted": drift.get("n_drifted"),
            "n_features": drift.get("n_features"),
            "top_drifted": drift.get("top_drifted", [])[:10],
            "thresholds": drift.get("thresholds"),
            "summary_path": summary.get("summary_path"),
        },
    }
    return RetrainDecision(True, reason, conf)


# --------------------------------------------------------------------------- canary

CanaryAction = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True, slots=True)
class VariantStats:
    """One variant's logged traffic over the watch period."""

    variant: str
    model_version: str | None
    n_requests: int
    n_errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    decision_rate: float | None
    quality: dict[str, Any] | None  # classification_quality on labelled rows, None without labels
    scores: npt.NDArray[np.float32] = field(repr=False, default_factory=lambda: np.empty(0, np.float32))

    @property
    def error_rate(self) -> float:
        total = self.n_requests + self.n_errors
        return self.n_errors / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "scores"}
        d["error_rate"] = self.error_rate
        return d


def variant_stats(
    log: pa.Table,
    variant: str,
    *,
    n_errors: int = 0,
    labels: pa.Table | None = None,
) -> VariantStats:
    """Stats of ``variant``'s rows of a prediction-log table (labels: from ``read_labels``).

    ``n_errors`` counts requests that failed and were therefore never logged (from the
    predictor's ``fraudops_errors_total{variant}``); the DAG supplies it.
    """
    import pyarrow.compute as pc

    rows = log.filter(pc.equal(log.column(predlog.VARIANT), variant))
    lat = rows.column(predlog.LATENCY_MS).to_numpy().astype(np.float64)
    versions = pc.value_counts(rows.column(predlog.MODEL_VERSION)).to_pylist() if rows.num_rows else []
    version = max(versions, key=lambda v: v["counts"])["values"] if versions else None
    quality = None
    if labels is not None and rows.num_rows:
        labelled = join_labels(rows, labels)
        if labelled.num_rows:
            quality = classification_quality(
                labelled.column("is_fraud").to_numpy(),
                labelled.column(predlog.PROBABILITY).to_numpy(),
                labelled.column(predlog.DECISION).to_numpy(),
            )
    pct = np.percentile(lat, [50, 95, 99]) if lat.size else [None, None, None]
    decisions = rows.column(predlog.DECISION).to_numpy()
    return VariantStats(
        variant=variant,
        model_version=version,
        n_requests=rows.num_rows,
        n_errors=n_errors,
        latency_p50_ms=None if pct[0] is None else float(pct[0]),
        latency_p95_ms=None if pct[1] is None else float(pct[1]),
        latency_p99_ms=None if pct[2] is None else float(pct[2]),
        decision_rate=float(decisions.mean()) if decisions.size else None,
        quality=quality,
        scores=as_f32(rows.column(predlog.PROBABILITY).to_numpy()),
    )


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """What a challenger must show before it takes all the traffic."""

    watch_hours: float = 24.0
    min_requests: int = 200
    max_error_rate_increase: float = 0.005  # absolute, challenger minus champion
    max_latency_p95_ratio: float = 1.5
    latency_sla_ms: float = 50.0
    max_score_psi: float = 0.2
    min_labelled_positives: int = 20
    max_precision_drop: float = 0.05
    max_recall_drop: float = 0.05
    max_auc_drop: float = 0.02

    @classmethod
    def from_settings(cls, settings: Settings) -> CanaryPolicy:
        return cls(watch_hours=settings.canary.watch_hours, max_score_psi=settings.drift.psi_threshold)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class CanaryDecision:
    """Promote the challenger, roll it back, or keep watching; with the reason and every check."""

    action: CanaryAction
    reason: str
    checks: list[Check]
    champion: dict[str, Any]
    challenger: dict[str, Any]
    score_psi: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_psi(reference_scores: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """PSI of ``scores`` over quantile bins of ``reference_scores`` (None when either is empty)."""
    ref, _ = drop_nan(as_f32(reference_scores))
    cur, _ = drop_nan(as_f32(scores))
    if ref.size == 0 or cur.size == 0:
        return None
    bins = fit_bins(ref)
    return psi(proportions(bin_counts(ref, bins.cuts)), proportions(bin_counts(cur, bins.cuts)))


def f1_score(quality: dict[str, Any]) -> float | None:
    """F1 of a ``classification_quality`` result (None without precision and recall)."""
    precision, recall = quality.get("precision"), quality.get("recall")
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def decide_canary(
    champion: VariantStats,
    challenger: VariantStats,
    *,
    watch_elapsed_hours: float,
    policy: CanaryPolicy | None = None,
) -> CanaryDecision:
    """Compare the challenger with the champion on their logged traffic.

    Fail fast, promote slowly: a failed check with enough traffic rolls back at once;
    promotion needs the watch period over and every check passed. At the end of the watch
    period without enough challenger traffic to judge, the challenger is rolled back
    (the safe default: it can be announced again). Quality (precision, recall) decides
    where both sides have enough labelled fraud; otherwise a score distribution that moved
    beyond the PSI threshold is a reason to roll back, as nothing shows the move is good.
    """
    p = policy or CanaryPolicy()
    checks: list[Check] = []
    spsi = score_psi(champion.scores, challenger.scores)
    over = watch_elapsed_hours >= p.watch_hours

    def decision(action: CanaryAction, reason: str) -> CanaryDecision:
        return CanaryDecision(action, reason, checks, champion.to_dict(), challenger.to_dict(), spsi)

    if challenger.n_requests < p.min_requests:
        detail = f"challenger served {challenger.n_requests} requests, fewer than {p.min_requests} needed to judge"
        checks.append(Check("traffic", False, detail))
        if over:
            return decision("rollback", f"watch period over and {detail}")
        return decision("wait", f"{detail}; watching ({watch_elapsed_hours:.1f}/{p.watch_hours:.1f} h)")
    checks.append(
        Check("traffic", True, f"challenger {challenger.n_requests}, champion {champion.n_requests} requests")
    )

    err_delta = challenger.error_rate - champion.error_rate
    checks.append(
        Check(
            "error_rate",
            err_delta <= p.max_error_rate_increase,
            f"challenger {challenger.error_rate:.3%} vs champion {champion.error_rate:.3%} "
            f"(allowed increase {p.max_error_rate_increase:.2%})",
        )
    )

    c95, h95 = challenger.latency_p95_ms, champion.latency_p95_ms
    latency_ok = c95 is not None and c95 <= p.latency_sla_ms
    if latency_ok and c95 is not None and h95 is not None and h95 > 0:
        latency_ok = c95 <= h95 * p.max_latency_p95_ratio
    checks.append(
        Check(
            "latency_p95",
            latency_ok,
            f"challenger {_fmt(c95, '.1f')} ms vs champion {_fmt(h95, '.1f')} ms "
            f"(at most x{p.max_latency_p95_ratio} and {p.latency_sla_ms:.0f} ms)",
        )
    )

    cq, hq = challenger.quality, champion.quality
    labelled = (
        cq is not None
        and hq is not None
        and cq["n_positive"] >= p.min_labelled_positives
        and hq["n_positive"] >= p.min_labelled_positives
    )
    if labelled and cq is not None and hq is not None:
        c_auc, h_auc = cq.get("auc_roc"), hq.get("auc_roc")
        auc_ok = c_auc is not None and (h_auc is None or c_auc >= h_auc - p.max_auc_drop)
        checks.append(
            Check(
                "auc_roc", auc_ok, f"challenger {_fmt(c_auc)} vs champion {_fmt(h_auc)} (allowed drop {p.max_auc_drop})"
            )
        )
        # A threshold trades precision for recall. A drop in one is accepted when the
        # challenger ranks as well (AUC-ROC) and strikes a better balance (F1): a stale
        # champion that flags most transactions has a high recall, not a better decision.
        c_f1, h_f1 = f1_score(cq), f1_score(hq)
        better_balance = auc_ok and c_f1 is not None and (h_f1 is None or c_f1 >= h_f1)
        for metric, allowed in (("precision", p.max_precision_drop), ("recall", p.max_recall_drop)):
            c, h = cq.get(metric), hq.get(metric)
            ok = c is not None and (h is None or c >= h - allowed)
            detail = f"challenger {_fmt(c)} vs champion {_fmt(h)} (allowed drop {allowed}) on labels"
            if not ok and better_balance:
                ok = True
                detail += f"; accepted: a better balance (F1 {_fmt(c_f1)} vs {_fmt(h_f1)}) at no loss of AUC-ROC"
            checks.append(Check(metric, ok, detail))
        checks.append(Check("score_distribution", True, f"PSI {_fmt(spsi)} vs champion (informational: labels decide)"))
    else:
        ok = spsi is None or spsi < p.max_score_psi
        checks.append(
            Check(
                "score_distribution",
                ok,
                f"PSI {_fmt(spsi)} vs champion (limit {p.max_score_psi}; too few labelled frauds to judge quality)",
            )
        )

    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(f"{c.name} failed ({c.detail})" for c in failed)
        return decision("rollback", reason)
    if not over:
        return decision(
            "wait",
            f"all checks pass so far; watching ({watch_elapsed_hours:.1f}/{p.watch_hours:.1f} h)",
        )
    reason = "every check passed over the watch period (" + ", ".join(c.name for c in checks) + ")"
    return decision("promote", reason)
