"""Standardization, fitted on the training split only.

Amounts, counts, distances and durations are heavy-tailed (log-normal amounts, Poisson
counts with rare bursts): a plain z-score would let one large transaction dominate a
batch. Those features first go through a signed ``log1p`` (``sign(x) * log(1 + |x|)``,
defined for every real value, so an out-of-range request at serving time still gets a
finite input), then every feature is centred and scaled with the training split's mean
and standard deviation.

The same three arrays (``log_mask``, ``mean``, ``std``) are buffers of the model
(:mod:`fraudops.training.model`), so the transformation is part of the PyTorch model
and of its ONNX graph: serving cannot skew from training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudops import schema

# Kinds whose values can span orders of magnitude when they have no upper bound.
_HEAVY_TAILED_KINDS = frozenset({"amount", "count", "distance", "ratio", "time"})
# A constant column on the training split would divide by zero: scale it by one instead.
_MIN_STD = 1e-6


def log_mask_from_schema() -> np.ndarray:
    """Which features get the signed log1p: unbounded amounts, counts, distances, ratios, durations."""
    return np.array(
        [f.kind in _HEAVY_TAILED_KINDS and f.high is None for f in schema.FEATURES],
        dtype=bool,
    )


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: monotone, odd, finite for every finite input."""
    out: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return out


@dataclass(frozen=True, slots=True)
class Scaler:
    """The fitted transformation: ``(where(log_mask, slog1p(x), x) - mean) / std``."""

    log_mask: np.ndarray  # bool [n_features]
    mean: np.ndarray  # float32 [n_features]
    std: np.ndarray  # float32 [n_features], > 0

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the transformation in float32 (as the model and the ONNX graph do)."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected [n, {self.n_features}] features, got shape {X.shape}")
        x = X.astype(np.float32, copy=False)
        z = np.where(self.log_mask, signed_log1p(x), x).astype(np.float32)
        out: np.ndarray = ((z - self.mean) / self.std).astype(np.float32)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, keyed by feature name (logged with the run)."""
        return {
            "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
            "transform": "(where(log_mask, sign(x)*log1p(|x|), x) - mean) / std",
            "features": {
                name: {"log1p": bool(self.log_mask[j]), "mean": float(self.mean[j]), "std": float(self.std[j])}
                for j, name in enumerate(schema.FEATURE_NAMES[: self.n_features])
            },
        }


def fit_scaler(X_train: np.ndarray, log_mask: np.ndarray | None = None) -> Scaler:
    """Fit on the training split only (statistics in float64, stored as float32)."""
    if X_train.ndim != 2 or X_train.shape[0] < 2:
        raise ValueError(f"need a 2-D training matrix with at least 2 rows, got shape {X_train.shape}")
    mask = log_mask_from_schema() if log_mask is None else np.asarray(log_mask, dtype=bool)
    if mask.shape != (X_train.shape[1],):
        raise ValueError(f"log_mask has shape {mask.shape}, the features {X_train.shape[1]}")
    x = X_train.astype(np.float64)
    z = np.where(mask, signed_log1p(x), x)
    mean = z.mean(axis=0)
    std = z.std(axis=0)
    std = np.where(std < _MIN_STD, 1.0, std)
    return Scaler(log_mask=mask, mean=mean.astype(np.float32), std=std.astype(np.float32))
