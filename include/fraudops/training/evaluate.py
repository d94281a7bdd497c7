"""Metrics and the decision threshold.

The model is trained with a class-weighted loss, so its scores are not calibrated
probabilities of fraud and 0.5 is not a meaningful cut. The decision threshold is tuned
on the validation split, never on the test split: by default the score that maximizes
F1 (the balance of missed fraud and false alarms when neither cost is known); with
``min_precision`` the threshold with the best recall whose precision reaches it (the
usual operating point when analysts can review a fixed share of alerts).

A transaction is flagged when ``probability >= threshold`` (the predictor uses the same
comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    """The tuned threshold and the validation metrics it reaches."""

    threshold: float
    precision: float
    recall: float
    f1: float
    strategy: str


def _check_binary(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1).astype(np.float64)
    s = np.asarray(scores).reshape(-1).astype(np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if y.sum() == 0 or y.sum() == y.size:
        raise ValueError("both classes are needed (the labels are all one class)")
    return y, s


def _pr_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of ``s >= t`` for every distinct score ``t``, highest first."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # The last index of each run of equal scores: ties are flagged together.
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last]
    predicted = last + 1.0
    precision = tp / predicted
    recall = tp / y.sum()
    return s_sorted[last], precision, recall


def tune_threshold(y_true: np.ndarray, scores: np.ndarray, *, min_precision: float | None = None) -> ThresholdChoice:
    """Choose the decision threshold on validation data.

    Without ``min_precision``: the score with the highest F1 (ties go to the higher
    threshold, i.e. fewer alerts). With it: among thresholds whose precision is at least
    ``min_precision``, the one with the highest recall; if none reaches it, the one with
    the highest precision.
    """
    y, s = _check_binary(y_true, scores)
    thresholds, precision, recall = _pr_points(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    if min_precision is None:
        i = int(np.argmax(f1))  # thresholds are descending: argmax takes the highest on ties
        strategy = "max_f1"
    else:
        if not 0.0 < min_precision <= 1.0:
            raise ValueError(f"min_precision must be in (0, 1], got {min_precision}")
        ok = np.nonzero(precision >= min_precision)[0]
        i = int(ok[np.argmax(recall[ok])]) if ok.size else int(np.argmax(precision))
        strategy = f"min_precision_{min_precision:g}"
    return ThresholdChoice(
        threshold=float(thresholds[i]),
        precision=float(precision[i]),
        recall=float(recall[i]),
        f1=float(f1[i]),
        strategy=strategy,
    )


def auc_roc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores given their average rank).

    Equal to ``sklearn.metrics.roc_auc_score``; computed here so that a training run or
    an evaluation need not import scikit-learn (several seconds at start-up).
    """
    y, s = _check_binary(y_true, scores)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct score: the ranks before it, plus the middle of its run.
    avg_rank = np.cumsum(counts) - counts + (counts + 1) / 2.0
    ranks = avg_rank[inverse]
    n_pos = y.sum()
    n_neg = y.size - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as average precision, ``sum_n (R_n - R_{n-1}) P_n`` (as ``sklearn``'s)."""
    y, s = _check_binary(y_true, scores)
    _, precision, recall = _pr_points(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC-ROC, PR-AUC (average precision), and precision/recall/F1 of ``scores >= threshold``."""
    y, s = _check_binary(y_true, scores)
    pred = s >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "auc_roc": auc_roc(y, s),
        "pr_auc": average_precision(y, s),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def confusion(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]`` of ``scores >= threshold``."""
    y, s = _check_binary(y_true, scores)
    pred = s >= threshold
    tn = int(np.sum(~pred & (y == 0)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tp = int(np.sum(pred & (y == 1)))
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)
