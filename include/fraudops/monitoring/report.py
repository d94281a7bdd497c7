"""The Evidently 0.7 drift report an operator opens, and Evidently's PSI for comparison.

The drift job keeps no raw training rows, only the reference profile; the report's
reference side is therefore a sample drawn from the profile's histograms
(:func:`synthesize_reference`: a bin by its reference proportion, then a value uniform
within the bin, or the exact value for discrete features). The current side is a random
sample of the day's traffic when the day is large. The job's own figures (in the JSON
summary) come from :mod:`fraudops.monitoring.drift`; the report is for reading.

Evidently is imported inside the functions only (about 15 s).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fraudops.monitoring.profile import Profile, profile_bins

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

DEFAULT_REPORT_ROWS = 5_000
SCORE_COLUMN = "probability"


def synthesize_reference(profile: Profile, n_rows: int, *, seed: int = 0, with_score: bool = True) -> pd.DataFrame:
    """A sample that follows the profile's per-feature histograms (float32 columns)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = list(profile["features"])
    if with_score:
        names.append("score")
    data: dict[str, np.ndarray] = {}
    for name in names:
        bins, ref = profile_bins(profile, name)
        which = rng.choice(ref.size, size=n_rows, p=ref / ref.sum())
        if bins.discrete:
            values = np.concatenate([[bins.lo], bins.cuts.astype(np.float64)])
            col = values[which]
        else:
            edges = np.array(bins.edges(), dtype=np.float64)
            col = edges[which] + rng.random(n_rows) * (edges[which + 1] - edges[which])
        data[SCORE_COLUMN if name == "score" else name] = col.astype(np.float32)
    return pd.DataFrame(data)


def sample_rows(table: pa.Table, n_rows: int, *, seed: int = 0) -> pa.Table:
    """A uniform random sample without replacement (the table itself when small enough)."""
    if table.num_rows <= n_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=n_rows, replace=False))
    return table.take(idx)


@dataclass(frozen=True, slots=True)
class EvidentlyDrift:
    """Evidently's per-column PSI and its dataset verdict."""

    psi: dict[str, float]
    drifted: dict[str, bool]
    drift_share: float
    dataset_drift: bool
    seconds: float


def _drift_report(columns: Sequence[str], psi_threshold: float, drift_share: float) -> Any:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    return Report(
        [DataDriftPreset(columns=list(columns), method="psi", threshold=psi_threshold, drift_share=drift_share)]
    )


def _datasets(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]) -> tuple[Any, Any]:
    from evidently import DataDefinition, Dataset

    definition = DataDefinition(numerical_columns=list(columns))
    return (
        Dataset.from_pandas(current[list(columns)], data_definition=definition),
        Dataset.from_pandas(reference[list(columns)], data_definition=definition),
    )


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    *,
    psi_threshold: float = 0.2,
    drift_share: float = 0.3,
) -> EvidentlyDrift:
    """Run Evidently's ``DataDriftPreset`` with PSI and read its figures back."""
    started = time.perf_counter()
    report = _drift_report(columns, psi_threshold, drift_share)
    cur, ref = _datasets(reference, current, columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(cur, ref)
    psi: dict[str, float] = {}
    share = float("nan")
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith("ValueDrift"):
            psi[str(config["column"])] = float(metric["value"])
        elif kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    drifted = {c: v >= psi_threshold for c, v in psi.items()}
    return EvidentlyDrift(
        psi=psi,
        drifted=drifted,
        drift_share=share,
        dataset_drift=bool(share >= drift_share),  # Evidently's rule: share >= drift_share
        seconds=time.perf_counter() - started,
    )


def write_drift_report(
    current: pa.Table,
    profile: Profile,
    path: str | Path,
    *,
    rows: int = DEFAULT_REPORT_ROWS,
    seed: int = 0,
    psi_threshold: float = 0.2,
    drift_share: float = 0.3,
) -> dict[str, Any]:
    """Write the Evidently HTML report of ``current`` against the profile; returns its facts."""
    started = time.perf_counter()
    features = [n for n in profile["features"] if n in current.column_names]
    columns = features + ([SCORE_COLUMN] if SCORE_COLUMN in current.column_names else [])
    sample = sample_rows(current.select(columns), rows, seed=seed).to_pandas()
    reference = synthesize_reference(profile, rows, seed=seed)
    report = _drift_report(columns, psi_threshold, drift_share)
    cur, ref = _datasets(reference, sample, columns)
    with warnings.catch_warnings():
        # Evidently's correlation widgets divide by zero on constant columns: harmless noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(cur, ref)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(target))
    seconds = time.perf_counter() - started
    log.info("Evidently report (%d current rows, %d columns) in %.1f s: %s", len(sample), len(columns), seconds, target)
    return {
        "path": target.name,
        "current_rows": len(sample),
        "reference_rows": len(reference),
        "reference": "synthesized from the reference profile's histograms",
        "columns": len(columns),
        "seconds": round(seconds, 2),
    }
