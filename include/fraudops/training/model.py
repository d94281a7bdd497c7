"""The fraud model: an MLP over the tabular features, with the scaling inside.

:class:`FraudMLP` takes raw features in schema order and returns logits; its first step
is the fitted standardization (buffers, not parameters), so the logged PyTorch model,
the ONNX graph and the predictor all see the same raw inputs. :class:`FraudProbability`
adds the sigmoid: it is the model that is logged to MLflow and exported to ONNX.

Every operation is row-wise (no batch statistics at inference), so a prediction never
depends on the other rows of the batch or on their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fraudops.training.scaling import Scaler


class FraudMLP(nn.Module):
    """Standardization, then ``Linear -> ReLU -> Dropout`` blocks, then one logit."""

    log_mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.1) -> None:
        super().__init__()
        if n_features <= 0 or not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"invalid architecture: n_features={n_features}, hidden={tuple(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_features = n_features
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        # Identity scaling until set_scaler(): the model is usable (and exportable) either way.
        self.register_buffer("log_mask", torch.zeros(n_features, dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float32))
        self.register_buffer("std", torch.ones(n_features, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = n_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def set_scaler(self, scaler: Scaler) -> None:
        """Bake the fitted standardization into the model."""
        if scaler.n_features != self.n_features:
            raise ValueError(f"scaler has {scaler.n_features} features, the model {self.n_features}")
        with torch.no_grad():
            self.log_mask.copy_(torch.from_numpy(np.asarray(scaler.log_mask, dtype=bool)))
            self.mean.copy_(torch.from_numpy(np.asarray(scaler.mean, dtype=np.float32)))
            self.std.copy_(torch.from_numpy(np.asarray(scaler.std, dtype=np.float32)))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(where(log_mask, sign(x) * log1p(|x|), x) - mean) / std``."""
        z = torch.where(self.log_mask, torch.sign(x) * torch.log1p(torch.abs(x)), x)
        return (z - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``[batch]``."""
        out: torch.Tensor = self.net(self.preprocess(x))
        return out.squeeze(-1)

    def architecture(self) -> dict[str, Any]:
        """What it takes to build the same module again."""
        return {"n_features": self.n_features, "hidden": list(self.hidden), "dropout": self.dropout}


class FraudProbability(nn.Module):
    """``sigmoid(FraudMLP(x))``: raw features in, fraud probability ``[batch]`` out."""

    def __init__(self, mlp: FraudMLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(features))


def build_model(n_features: int, hidden: Sequence[int], dropout: float, scaler: Scaler | None = None) -> FraudMLP:
    """A fresh model (initialized from torch's current RNG state), scaling baked in if given."""
    model = FraudMLP(n_features, hidden, dropout)
    if scaler is not None:
        model.set_scaler(scaler)
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, *, batch_size: int = 65_536) -> np.ndarray:
    """Fraud probabilities in float32, computed in eval mode on the model's device, in fp32.

    ``model`` is a :class:`FraudMLP` (logits, the sigmoid is applied here) or a
    :class:`FraudProbability` (or any module returning probabilities).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = np.empty(X.shape[0], dtype=np.float32)
        for lo in range(0, X.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[lo : lo + batch_size], dtype=np.float32)).to(device)
            res = model(xb).float()
            if isinstance(model, FraudMLP):
                res = torch.sigmoid(res)
            out[lo : lo + batch_size] = res.reshape(-1).cpu().numpy()
        return out
    finally:
        model.train(was_training)
