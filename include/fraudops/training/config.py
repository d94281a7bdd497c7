"""Hyperparameters of one training run (flags and ``FRAUDOPS_TRAIN_*`` variables feed it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MixedPrecision = Literal["auto", "no", "bf16", "fp16"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides the trained model, besides the data. Logged as run parameters."""

    epochs: int = 15
    batch_size: int = 1024
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    hidden: tuple[int, ...] = field(default=(256, 128))
    dropout: float = 0.1
    # Early stopping: epochs without a better validation AUC-ROC before training stops.
    patience: int = 3
    # Linear warm-up share of all steps, then cosine decay to zero.
    warmup_fraction: float = 0.05
    grad_clip_norm: float = 1.0
    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # "auto": bf16 on a GPU that supports it, full precision otherwise.
    mixed_precision: MixedPrecision = "auto"
    # Threshold strategy: None = max F1 on validation; else best recall at this precision.
    min_precision: float | None = None
    # CPU threads for torch (None: torch's default, one per core it sees). Set it to the
    # pod's CPU limit: torch counts the node's cores, not the cgroup quota, and too many
    # threads on too few cores slow training down several times.
    num_threads: int | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if not self.hidden or any(h < 1 for h in self.hidden):
            problems.append(f"hidden layers must be positive widths (got {self.hidden})")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.patience < 1:
            problems.append(f"patience must be >= 1 (got {self.patience})")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction must be in [0, 1) (got {self.warmup_fraction})")
        if not self.grad_clip_norm > 0:
            problems.append(f"grad_clip_norm must be > 0 (got {self.grad_clip_norm})")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            problems.append(f"mixed_precision must be auto, no, bf16 or fp16 (got {self.mixed_precision!r})")
        if self.min_precision is not None and not 0 < self.min_precision <= 1:
            problems.append(f"min_precision must be in (0, 1] (got {self.min_precision})")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append(f"num_threads must be >= 1 (got {self.num_threads})")
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))

    def params(self) -> dict[str, Any]:
        """Flat parameters for MLflow."""
        out = asdict(self)
        out["hidden"] = ",".join(str(h) for h in self.hidden)
        out["min_precision"] = "none" if self.min_precision is None else self.min_precision
        out["num_threads"] = "default" if self.num_threads is None else self.num_threads
        out["optimizer"] = "AdamW"
        out["lr_schedule"] = "linear warm-up + cosine"
        out["loss"] = "BCEWithLogits(pos_weight=n_neg/n_pos)"
        return out


def parse_hidden(value: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``, with a clear error for anything else."""
    try:
        widths = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"hidden layers must be comma-separated integers, got {value!r}") from None
    if not widths:
        raise ValueError("at least one hidden layer is needed")
    return widths
