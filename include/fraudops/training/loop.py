"""The training loop, through Hugging Face Accelerate.

Accelerate places the model (CPU, one GPU, or one process per GPU under
``accelerate launch``) and applies bf16 autocast on GPUs. Batches do not come from a
per-sample ``DataLoader``: the split lives in memory as two tensors on the device, and
each epoch slices a random permutation of row indices. For a small tabular model the
per-sample ``__getitem__`` and collate of a ``DataLoader`` would dominate the time
(``bench/bench_training.py`` measures it).

Under several processes each one takes its own equal share of the permutation (the
same permutation everywhere, by seed), and DDP averages the gradients; every process
evaluates the full validation split with the same weights, so the early-stopping
decision is the same everywhere.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fraudops.training.config import TrainConfig
from fraudops.training.data import Split
from fraudops.training.evaluate import binary_metrics, tune_threshold
from fraudops.training.scaling import Scaler, fit_scaler

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from fraudops.training.model import FraudMLP

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EpochStats:
    """What one epoch did (logged per epoch, step = epoch)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc_roc: float
    val_pr_auc: float
    val_precision: float
    val_recall: float
    val_f1: float
    learning_rate: float
    seconds: float
    samples_per_s: float

    def metrics(self) -> dict[str, float]:
        return {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_auc_roc": self.val_auc_roc,
            "val_pr_auc": self.val_pr_auc,
            "val_precision": self.val_precision,
            "val_recall": self.val_recall,
            "val_f1": self.val_f1,
            "learning_rate": self.learning_rate,
            "epoch_seconds": self.seconds,
            "train_samples_per_s": self.samples_per_s,
        }


@dataclass(slots=True)
class FitResult:
    """The best model (by validation AUC-ROC), on the CPU, in eval mode, and how it got there."""

    model: FraudMLP
    scaler: Scaler
    pos_weight: float
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_auc_roc: float = 0.0
    stopped_early: bool = False
    device: str = "cpu"
    mixed_precision: str = "no"
    num_processes: int = 1
    train_seconds: float = 0.0


def resolve_mixed_precision(requested: str) -> str:
    """``auto`` -> ``bf16`` on a CUDA device that supports it, else ``no``."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(mixed_precision: str = "auto") -> Accelerator:
    """An :class:`accelerate.Accelerator` for this process (reads ``accelerate launch``'s environment)."""
    from accelerate import Accelerator

    # Deterministic cuBLAS needs a fixed workspace; it must be set before CUDA initializes.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    # cpu=True on a host without CUDA: Accelerate then recognizes a multi-process CPU
    # launch (accelerate launch / torchrun, WORLD_SIZE > 1) and uses DDP over gloo;
    # without it, every process would believe it is the only one.
    return Accelerator(
        mixed_precision=resolve_mixed_precision(mixed_precision),
        cpu=not torch.cuda.is_available(),
    )


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def weighted_bce(logits: np.ndarray, y: np.ndarray, pos_weight: float) -> float:
    """The training loss on already-computed logits (for the validation loss curve)."""
    z = logits.astype(np.float64)
    # softplus(-z) = -log(sigmoid(z)), stable for large |z|.
    loss = pos_weight * y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    return float(loss.mean())


def logits_of(model: torch.nn.Module, X: np.ndarray, *, batch_size: int = 65_536) -> np.ndarray:
    """Logits of a :class:`FraudMLP` in eval mode and fp32, as float32."""
    import torch

    device = next(model.parameters()).device
    out = np.empty(X.shape[0], dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, X.shape[0], batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(X[lo : lo + batch_size], dtype=np.float32)).to(device)
                out[lo : lo + batch_size] = model(xb).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * z.astype(np.float64)))).astype(np.float32)


def fit(
    config: TrainConfig,
    train: Split,
    val: Split,
    *,
    accelerator: Accelerator | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> FitResult:
    """Train a :class:`FraudMLP` on ``train``, early-stopping on the AUC-ROC of ``val``.

    Deterministic by ``config.seed`` on a given device and process count. ``on_epoch``
    is called after every epoch (on every process; the caller decides who logs).
    """
    # The optimizer imports torch._dynamo on its first step (seconds on a small machine):
    # import it now, so that the first epoch's timing measures training.
    import torch
    import torch._dynamo
    from accelerate.utils import set_seed

    from fraudops.training.model import build_model

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)  # process-wide, as torch's setting is
    acc = accelerator or make_accelerator(config.mixed_precision)
    set_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = acc.device

    scaler = fit_scaler(train.X)
    n_pos = train.n_positive
    n_neg = train.n_rows - n_pos
    pos_weight = n_neg / max(1, n_pos)
    # Training runs the MLP layers (``FraudMLP.net``) on inputs scaled once up front: the
    # scaling is fixed, so doing it per batch would only repeat the same elementwise work.
    # Evaluation runs the whole FraudMLP (scaling inside) on raw features, as served;
    # it is a separate module because the prepared one's forward may carry Accelerate's
    # autocast wrapper, and validation must run in fp32.
    net = build_model(train.X.shape[1], config.hidden, config.dropout, scaler).net
    eval_model = build_model(train.X.shape[1], config.hidden, config.dropout, scaler).to(device).eval()

    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    n_proc, rank = acc.num_processes, acc.process_index
    per_process = train.n_rows // n_proc
    if per_process < 1:
        raise ValueError(f"{train.n_rows} training rows cannot be shared by {n_proc} processes")
    steps_per_epoch = math.ceil(per_process / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_fraction * total_steps)
    # Not passed through prepare(): Accelerate would step it once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total_steps, warmup))
    net, optimizer = acc.prepare(net, optimizer)

    X = torch.from_numpy(scaler.transform(train.X)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(train.y, dtype=np.float32)).to(device)
    pw = torch.tensor(pos_weight, dtype=torch.float32, device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pw)

    result = FitResult(
        model=eval_model,
        scaler=scaler,
        pos_weight=pos_weight,
        device=str(device),
        mixed_precision=str(acc.mixed_precision),
        num_processes=n_proc,
    )
    best_state: dict[str, Any] | None = None
    bad_epochs = 0
    started = time.perf_counter()
    (log.info if acc.is_main_process else log.debug)(
        "training on %s (%s, %d process(es)): %s rows, %d steps/epoch, pos_weight %.1f",
        device,
        acc.mixed_precision,
        n_proc,
        f"{train.n_rows:,}",
        steps_per_epoch,
        pos_weight,
    )
    for epoch in range(1, config.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        perm = torch.randperm(train.n_rows, generator=gen)[rank::n_proc][:per_process].to(device)
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        for lo in range(0, per_process, config.batch_size):
            idx = perm[lo : lo + config.batch_size]
            logits = net(X[idx]).squeeze(-1)
            loss = loss_fn(logits.float(), y[idx])
            acc.backward(loss)
            acc.clip_grad_norm_(net.parameters(), config.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # Summed on the device: one host sync per epoch, not per step.
            loss_sum += loss.detach() * idx.numel()
        train_loss = float(acc.reduce(loss_sum, reduction="sum").item()) / (per_process * n_proc)
        seconds = time.perf_counter() - t0

        eval_model.net.load_state_dict(acc.unwrap_model(net).state_dict())
        val_logits = logits_of(eval_model, val.X)
        val_p = sigmoid(val_logits)
        choice = tune_threshold(val.y, val_p, min_precision=config.min_precision)
        m = binary_metrics(val.y, val_p, choice.threshold)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=weighted_bce(val_logits, val.y, pos_weight),
            val_auc_roc=m["auc_roc"],
            val_pr_auc=m["pr_auc"],
            val_precision=m["precision"],
            val_recall=m["recall"],
            val_f1=m["f1"],
            learning_rate=float(optimizer.param_groups[0]["lr"]),
            seconds=seconds,
            samples_per_s=per_process * n_proc / seconds if seconds > 0 else float("nan"),
        )
        result.history.append(stats)
        # One voice under several processes (they all compute the same validation figures).
        (log.info if acc.is_main_process else log.debug)(
            "epoch %d: loss %.4f, val AUC %.4f, PR-AUC %.4f, F1 %.3f (%.1fs, %s samples/s)",
            epoch,
            stats.train_loss,
            stats.val_auc_roc,
            stats.val_pr_auc,
            stats.val_f1,
            seconds,
            f"{stats.samples_per_s:,.0f}",
        )
        if on_epoch is not None:
            on_epoch(stats)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {train_loss})")
        if stats.val_auc_roc > result.best_val_auc_roc:
            result.best_val_auc_roc = stats.val_auc_roc
            result.best_epoch = epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in eval_model.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                result.stopped_early = epoch < config.epochs
                (log.info if acc.is_main_process else log.debug)(
                    "early stop after epoch %d (best epoch %d)", epoch, result.best_epoch
                )
                break
    result.train_seconds = time.perf_counter() - started

    final = build_model(train.X.shape[1], config.hidden, config.dropout, scaler)
    if best_state is not None:
        final.load_state_dict(best_state)
    result.model = final.eval()
    acc.free_memory()
    return result
