"""Prediction-log records from generated transactions, for tests, demos and benchmarks.

The predictor writes the real log. To exercise the drift job without it, generated
transactions (:func:`fraudops.data.generate.generate_transactions`, any scenario) are
scored by a small logistic model fitted here with NumPy (:func:`fit_stand_in_scorer`)
or by any callable, and turned into records that follow the log contract.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fraudops import schema
from fraudops.monitoring import predlog

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops.data.generate import Scenario
    from fraudops.monitoring.profile import Profile

F32 = npt.NDArray[np.float32]
Scorer = Callable[[F32], F32]


def feature_matrix(table: pa.Table, feature_names: Sequence[str] = schema.FEATURE_NAMES) -> F32:
    """The ``[rows, features]`` float32 matrix of a transactions or log table."""
    return np.column_stack([table.column(n).to_numpy().astype(np.float32, copy=False) for n in feature_names])


@dataclass(frozen=True, slots=True)
class StandInScorer:
    """A logistic regression on standardized features: a real, if simple, fraud model."""

    center: F32
    scale: F32
    weights: npt.NDArray[np.float64]
    bias: float

    def __call__(self, X: F32) -> F32:
        out = np.empty(len(X), dtype=np.float32)
        for lo in range(0, len(X), 65_536):  # in chunks: a million rows stay a few hundred MB
            Z = np.clip((X[lo : lo + 65_536] - self.center) / self.scale, -10, 10).astype(np.float64)
            z = Z @ self.weights + self.bias
            out[lo : lo + 65_536] = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        return out


def fit_stand_in_scorer(transactions: pa.Table, *, l2: float = 1.0, newton_steps: int = 8) -> StandInScorer:
    """Fit a ridge-penalized logistic regression by Newton steps (a second or two)."""
    X = feature_matrix(transactions)
    y = transactions.column(schema.LABEL).to_numpy().astype(np.float64)
    center = np.median(X, axis=0).astype(np.float32)
    spread = np.percentile(X, 90, axis=0) - np.percentile(X, 10, axis=0)
    scale = np.where(spread > 0, spread, 1.0).astype(np.float32)
    Z = np.clip((X - center) / scale, -10, 10).astype(np.float64)
    Z1 = np.column_stack([Z, np.ones(len(Z))])
    w = np.zeros(Z1.shape[1])
    penalty = np.full(Z1.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(newton_steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z1 @ w, -30, 30)))
        grad = Z1.T @ (p - y) + penalty * w
        hess = (Z1 * (p * (1 - p))[:, None]).T @ Z1 + np.diag(penalty + 1e-9)
        w -= np.linalg.solve(hess, grad)
    return StandInScorer(center=center, scale=scale, weights=w[:-1], bias=float(w[-1]))


def log_records(
    transactions: pa.Table,
    probabilities: npt.ArrayLike,
    *,
    model_version: str,
    model_name: str = "fraud-detector",
    variant: str = "champion",
    threshold: float = 0.5,
    latency_ms: npt.ArrayLike | None = None,
    seed: int = 0,
) -> pa.Table:
    """Log records (the contract's columns) for scored transactions, logged at event time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if variant not in predlog.VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {predlog.VARIANTS}")
    n = transactions.num_rows
    proba = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    if proba.size != n:
        raise ValueError(f"{proba.size} probabilities for {n} transactions")
    rng = np.random.default_rng(seed)
    lat = (
        np.asarray(latency_ms, dtype=np.float32).reshape(-1)
        if latency_ms is not None
        else rng.lognormal(np.log(3.0), 0.35, n).astype(np.float32)
    )
    tx_ids = transactions.column(schema.TRANSACTION_ID)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        predlog.REQUEST_ID: pc.binary_join_element_wise(pa.scalar(f"req-{variant}-"), tx_ids, ""),
        predlog.TS: transactions.column(schema.EVENT_TIMESTAMP),
        schema.TRANSACTION_ID: tx_ids,
        schema.CARD_ID: transactions.column(schema.CARD_ID),
        predlog.MODEL_NAME: pa.array([model_name] * n, type=pa.string()),
        predlog.MODEL_VERSION: pa.array([model_version] * n, type=pa.string()),
        predlog.VARIANT: pa.array([variant] * n, type=pa.string()),
        predlog.PROBABILITY: pa.array(proba),
        predlog.DECISION: pa.array((proba >= threshold).astype(np.int8)),
        predlog.LATENCY_MS: pa.array(lat),
    }
    for name in schema.FEATURE_NAMES:
        columns[name] = transactions.column(name)
    return pa.table(columns).cast(predlog.log_schema())


# Every simulated batch draws its cards from one population (same seed, same count), as
# production traffic and the training data do; a batch gets its own transaction stream.
DEFAULT_CARDS = 2_000


def _day_scenario(name: str, day: date) -> Scenario:
    from fraudops.data.generate import get_scenario

    return replace(get_scenario(name), name=f"{name}@{day.isoformat()}")


def reference_setup(
    n_rows: int = 40_000, *, seed: int = 42, n_cards: int = DEFAULT_CARDS
) -> tuple[Profile, StandInScorer, float]:
    """A baseline training set, a stand-in model fitted on it, and its reference profile.

    Returns ``(profile, scorer, threshold)``; the threshold maximizes F1 on the
    validation batch whose scores the profile holds.
    """
    from fraudops.data.generate import generate_transactions
    from fraudops.monitoring.profile import build_reference_profile

    train = generate_transactions(n_rows, seed=seed, n_cards=n_cards)
    scorer = fit_stand_in_scorer(train.slice(0, min(n_rows, 20_000)))
    val = generate_transactions(
        max(n_rows // 4, 1_000),
        seed=seed,
        scenario=_day_scenario("baseline", date(1970, 1, 1)),
        n_cards=n_cards,
        id_prefix="val-",
    )
    val_scores = scorer(feature_matrix(val))
    y_val = val.column(schema.LABEL).to_numpy().astype(bool)
    threshold = _best_f1_threshold(y_val, val_scores)
    profile = build_reference_profile(
        feature_matrix(train), schema.FEATURE_NAMES, val_scores, train.column(schema.LABEL).to_numpy()
    )
    return profile, scorer, threshold


def _best_f1_threshold(y: npt.NDArray[np.bool_], scores: F32) -> float:
    candidates = np.unique(np.quantile(scores, np.linspace(0.90, 0.999, 60)))
    best, best_f1 = 0.5, -1.0
    for t in candidates:
        d = scores >= t
        tp = float(np.count_nonzero(d & y))
        f1 = 2 * tp / (np.count_nonzero(d) + np.count_nonzero(y)) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best


def simulate_day(
    day: date,
    n_rows: int,
    scorer: Scorer,
    *,
    scenario: str = "baseline",
    seed: int = 42,
    n_cards: int = DEFAULT_CARDS,
    model_version: str = "1",
    variant: str = "champion",
    threshold: float = 0.5,
    id_prefix: str | None = None,
) -> tuple[pa.Table, pa.Table]:
    """One UTC day of traffic under ``scenario``, scored: ``(log_records, transactions)``."""
    from fraudops.data.generate import generate_transactions

    start = datetime.combine(day, time(0, 0), tzinfo=UTC)
    prefix = id_prefix if id_prefix is not None else f"{scenario}-{day.isoformat()}-{variant}-"
    tx = generate_transactions(
        n_rows,
        seed=seed,
        scenario=_day_scenario(scenario, day),
        start=start,
        days=1,
        n_cards=n_cards,
        id_prefix=prefix,
    )
    proba = scorer(feature_matrix(tx))
    records = log_records(
        tx, proba, model_version=model_version, variant=variant, threshold=threshold, seed=zlib.crc32(prefix.encode())
    )
    return records, tx
