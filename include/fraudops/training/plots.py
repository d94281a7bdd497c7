"""Evaluation plots, drawn off-screen (matplotlib's Agg backend) for MLflow artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fraudops.training.evaluate import _check_binary, _pr_points, confusion

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fraudops.training.loop import EpochStats


def _figure(size: tuple[float, float] = (5.0, 4.5)) -> Figure:
    # The object-oriented API with no pyplot: no global state, no display, thread-safe enough.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def roc_curve_points(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates for every distinct threshold, starting at (0, 0)."""
    y, s = _check_binary(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / (y.size - y.sum())], np.r_[0.0, tp / y.sum()]


def roc_figure(y_true: np.ndarray, scores: np.ndarray, auc: float, title: str = "ROC (test)") -> Figure:
    """ROC curve with the chance diagonal."""
    fpr, tpr = roc_curve_points(y_true, scores)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def pr_figure(
    y_true: np.ndarray,
    scores: np.ndarray,
    pr_auc: float,
    threshold: float,
    title: str = "Precision-recall (test)",
) -> Figure:
    """Precision-recall curve, the base rate, and the operating point at ``threshold``."""
    y, s = _check_binary(y_true, scores)
    _, precision, recall = _pr_points(y, s)
    pred = s >= threshold
    tp = float(np.sum(pred & (y == 1)))
    op_p = tp / max(1.0, float(pred.sum()))
    op_r = tp / float(y.sum())
    fig = _figure()
    ax = fig.add_subplot()
    ax.step(np.r_[0.0, recall], np.r_[1.0, precision], where="post", lw=1.5, label=f"AP = {pr_auc:.4f}")
    ax.axhline(y.mean(), ls="--", lw=0.8, color="grey", label=f"base rate {y.mean():.2%}")
    ax.plot([op_r], [op_p], "o", color="C3", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def confusion_figure(y_true: np.ndarray, scores: np.ndarray, threshold: float, title: str = "Test") -> Figure:
    """Confusion matrix of ``scores >= threshold`` with counts and row shares."""
    cm = confusion(y_true, scores, threshold)
    shares = cm / np.maximum(1, cm.sum(axis=1, keepdims=True))
    fig = _figure((4.5, 4.0))
    ax = fig.add_subplot()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                f"{cm[i, j]:,}\n{shares[i, j]:.1%}",
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.5 else "black",
            )
    ax.set_xticks([0, 1], ["legit", "fraud"])
    ax.set_yticks([0, 1], ["legit", "fraud"])
    ax.set(xlabel="predicted", ylabel="actual", title=f"{title} at threshold {threshold:.3f}")
    fig.tight_layout()
    return fig


def loss_figure(history: Sequence[EpochStats]) -> Figure:
    """Train and validation loss per epoch, with validation AUC-ROC on a second axis."""
    epochs = [h.epoch for h in history]
    fig = _figure((6.0, 4.0))
    ax = fig.add_subplot()
    ax.plot(epochs, [h.train_loss for h in history], "o-", label="train loss")
    ax.plot(epochs, [h.val_loss for h in history], "s-", label="validation loss")
    ax.set(xlabel="epoch", ylabel="weighted BCE", title="Training curves")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h.val_auc_roc for h in history], "^--", color="C2", label="val AUC-ROC")
    ax2.set_ylabel("validation AUC-ROC")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right")
    fig.tight_layout()
    return fig
