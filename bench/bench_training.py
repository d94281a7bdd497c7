"""Benchmark: training throughput of the in-memory-tensor loop against a plain DataLoader loop.

Run: ``.venv/bin/python bench/bench_training.py`` (about a minute on 2 CPU cores).
On a GPU: the same command; Accelerate picks the device and bf16 autocast.

1. ``fraudops.training.loop.fit``: the production loop (the split lives on the device as
   two tensors; each epoch slices a random permutation of row indices).
2. The plain way: ``DataLoader(TensorDataset(X, y), batch_size, shuffle=True)``, one batch
   at a time, moved to the device, with the same model, optimizer, schedule, loss, clipping,
   precision and batch size, on the same (already scaled) data.

Both print training samples per second (median over the epochs after the first, which
warms up), and the ratio. The in-memory run also reports its validation AUC-ROC per
epoch and the wall time (training plus per-epoch validation) to reach ``--target-auc``
(default: the best validation AUC of this run). To compare a GPU with the CPU, pass the
CPU run's figure: ``--target-auc 0.9580``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import numpy as np


def _plain_dataloader_loop(
    X_scaled: np.ndarray,  # float32, already scaled
    y: np.ndarray,
    *,
    hidden: tuple[int, ...],
    dropout: float,
    batch_size: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    seed: int,
    pos_weight: float,
    accelerator: Any,
) -> list[float]:
    """The same training step as ``fit``, fed by a per-sample DataLoader. Samples/s per epoch."""
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, TensorDataset

    from fraudops.training.loop import cosine_with_warmup
    from fraudops.training.model import build_model

    set_seed(seed)
    net = build_model(X_scaled.shape[1], hidden, dropout).net
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = math.ceil(X_scaled.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(steps * epochs, int(0.05 * steps)))
    net, optimizer = accelerator.prepare(net, optimizer)
    device = accelerator.device
    dataset = TensorDataset(torch.from_numpy(X_scaled), torch.from_numpy(y))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    rates = []
    for _ in range(epochs):
        net.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for x_cpu, y_cpu in loader:
            xb, yb = x_cpu.to(device), y_cpu.to(device)
            loss = loss_fn(net(xb).squeeze(-1).float(), yb)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * xb.shape[0]
        float(loss_sum.item())  # the same one sync per epoch as fit
        rates.append(X_scaled.shape[0] / (time.perf_counter() - t0))
    return rates


def _steady(rates: list[float]) -> float:
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="generated transactions (70 %% train)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the in-memory loop")
    parser.add_argument("--baseline-epochs", type=int, default=2, help="epochs of the DataLoader loop")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--mixed-precision", default="auto", help="auto (bf16 on GPU) | no | bf16")
    parser.add_argument("--target-auc", type=float, default=None, help="validation AUC to time (default: best)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import torch

    from fraudops.data.generate import generate_transactions
    from fraudops.schema import FEATURE_NAMES, LABEL
    from fraudops.training.config import TrainConfig
    from fraudops.training.data import Split
    from fraudops.training.loop import fit, make_accelerator

    if args.threads:
        torch.set_num_threads(args.threads)
    # Imported lazily by the optimizer's first step (seconds): not part of training time.
    import torch._dynamo

    table = generate_transactions(args.rows, seed=args.seed)
    X = np.column_stack([table.column(n).to_numpy() for n in FEATURE_NAMES]).astype(np.float32)
    y = table.column(LABEL).to_numpy().astype(np.float32)
    ts = np.arange(args.rows, dtype=np.int64)
    n_train, n_val = int(args.rows * 0.7), int(args.rows * 0.15)
    train = Split("train", X[:n_train], y[:n_train], ts[:n_train])
    val = Split("val", X[n_train : n_train + n_val], y[n_train : n_train + n_val], ts[n_train : n_train + n_val])

    accelerator = make_accelerator(args.mixed_precision)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        patience=args.epochs,  # no early stop: the same amount of work every run
        mixed_precision=args.mixed_precision,
    )
    device = str(accelerator.device)
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(accelerator.device)})"
    print(
        f"device {device}, precision {accelerator.mixed_precision}, torch threads {torch.get_num_threads()}, "
        f"{n_train:,} training rows, batch {args.batch_size}"
    )

    marks: list[tuple[int, float, float]] = []
    started = time.perf_counter()
    result = fit(
        config,
        train,
        val,
        accelerator=accelerator,
        on_epoch=lambda s: marks.append((s.epoch, s.val_auc_roc, time.perf_counter() - started)),
    )
    fast = _steady([h.samples_per_s for h in result.history])
    for epoch, auc, wall in marks:
        print(f"  in-memory epoch {epoch}: val AUC-ROC {auc:.4f}, {wall:6.1f} s since start")
    target = args.target_auc if args.target_auc is not None else result.best_val_auc_roc
    reached = next(((e, w) for e, a, w in marks if a >= target), None)

    plain_rates = _plain_dataloader_loop(
        result.scaler.transform(train.X),
        train.y,
        hidden=config.hidden,
        dropout=config.dropout,
        batch_size=config.batch_size,
        epochs=args.baseline_epochs,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        seed=args.seed,
        pos_weight=result.pos_weight,
        accelerator=accelerator,
    )
    plain = _steady(plain_rates)

    print(f"in-memory tensors : {fast:12,.0f} samples/s")
    print(f"DataLoader        : {plain:12,.0f} samples/s")
    print(f"ratio             : {fast / plain:12.1f}x")
    if reached:
        print(f"time to val AUC-ROC {target:.4f}: {reached[1]:.1f} s (epoch {reached[0]})")
    else:
        print(f"val AUC-ROC {target:.4f} not reached in {args.epochs} epochs (best {result.best_val_auc_roc:.4f})")
    print(
        json.dumps(
            {
                "device": device,
                "mixed_precision": str(accelerator.mixed_precision),
                "train_rows": n_train,
                "batch_size": args.batch_size,
                "in_memory_samples_per_s": round(fast),
                "dataloader_samples_per_s": round(plain),
                "ratio": round(fast / plain, 2),
                "best_val_auc_roc": round(result.best_val_auc_roc, 4),
                "target_val_auc_roc": round(target, 4),
                "seconds_to_target": round(reached[1], 2) if reached else None,
            }
        )
    )


if __name__ == "__main__":
    main()
