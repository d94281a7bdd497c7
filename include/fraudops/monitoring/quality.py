"""Late labels: join them to logged predictions, then target drift and classification quality.

Labels (``transaction_id, is_fraud, label_timestamp``) arrive days after the prediction
(chargebacks, investigations). Only labels that had arrived by ``as_of`` count, so that a
re-run of a past day sees what the first run saw (``as_of`` defaults to the end of the
interval). A transaction labelled more than once counts as fraud if any label says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fraudops import schema
from fraudops.monitoring import predlog

if TYPE_CHECKING:
    import pyarrow as pa

LABEL_TIMESTAMP = "label_timestamp"
LABEL_COLUMNS = (schema.TRANSACTION_ID, schema.LABEL, LABEL_TIMESTAMP)


class LabelsError(ValueError):
    """Labels that cannot be read or joined."""


def read_labels(source: str | Path | pa.Table, *, as_of: datetime | None = None) -> pa.Table:
    """Labels from a table, a Parquet file or a directory of Parquet files.

    Keeps the labels known at ``as_of`` (all when None), one row per transaction.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if isinstance(source, pa.Table):
        table = source
    else:
        path = Path(source)
        if not path.exists():
            raise LabelsError(f"labels not found: {path}")
        try:
            table = ds.dataset(str(path), format="parquet").to_table()
        except (pa.ArrowInvalid, OSError) as exc:
            raise LabelsError(f"cannot read labels from {path}: {exc}") from exc
    missing = [c for c in LABEL_COLUMNS if c not in table.column_names]
    if missing:
        raise LabelsError(f"labels lack column(s): {', '.join(missing)} (expected {', '.join(LABEL_COLUMNS)})")
    table = table.select(list(LABEL_COLUMNS)).cast(
        pa.schema(
            [
                pa.field(schema.TRANSACTION_ID, pa.string()),
                pa.field(schema.LABEL, pa.int8()),
                pa.field(LABEL_TIMESTAMP, pa.timestamp("us", tz="UTC")),
            ]
        )
    )
    if as_of is not None:
        bound = pa.scalar(as_of.astimezone(UTC), type=pa.timestamp("us", tz="UTC"))
        table = table.filter(pc.less_equal(table.column(LABEL_TIMESTAMP), bound))
    table = table.filter(pc.is_valid(table.column(schema.TRANSACTION_ID)))
    return (
        table.group_by(schema.TRANSACTION_ID)
        .aggregate([(schema.LABEL, "max")])
        .rename_columns([schema.TRANSACTION_ID, schema.LABEL])
    )


def join_labels(predictions: pa.Table, labels: pa.Table) -> pa.Table:
    """Predictions that have a label (inner join on ``transaction_id``)."""
    if schema.TRANSACTION_ID not in predictions.column_names:
        raise LabelsError("predictions lack transaction_id: labels cannot be joined")
    keep = [
        c
        for c in (predlog.TS, schema.TRANSACTION_ID, predlog.PROBABILITY, predlog.DECISION)
        if c in predictions.column_names
    ]
    return predictions.select(keep).join(labels, keys=schema.TRANSACTION_ID, join_type="inner")


def _average_ranks(x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    sorter = np.argsort(x, kind="mergesort")
    inv = np.empty(sorter.size, dtype=np.intp)
    inv[sorter] = np.arange(sorter.size, dtype=np.intp)
    xs = x[sorter]
    obs = np.r_[True, xs[1:] != xs[:-1]]
    dense = obs.cumsum()[inv]
    count = np.r_[np.nonzero(obs)[0], obs.size]
    ranks: npt.NDArray[np.float64] = 0.5 * (count[dense] + count[dense - 1] + 1)
    return ranks


def auc_roc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None with one class only."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_quality(labels: npt.ArrayLike, scores: npt.ArrayLike, decisions: npt.ArrayLike) -> dict[str, Any]:
    """Precision and recall of the logged decisions, AUC-ROC of the scores, counts."""
    y = np.asarray(labels).astype(bool)
    d = np.asarray(decisions).astype(bool)
    tp = int(np.count_nonzero(y & d))
    fp = int(np.count_nonzero(~y & d))
    fn = int(np.count_nonzero(y & ~d))
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "auc_roc": auc_roc(y, scores),
    }


def _day_strings(ts: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    import pyarrow.compute as pc

    result: npt.NDArray[Any] = pc.strftime(ts, format="%Y-%m-%d").to_numpy(zero_copy_only=False)
    return result


def quality_by_day(labelled: pa.Table, logged: pa.Table | None = None) -> list[dict[str, Any]]:
    """:func:`classification_quality` per UTC day of the prediction, oldest first.

    With ``logged`` (every logged row of the window, labelled or not), each day also
    gets ``n_logged`` and ``label_coverage``, the share of its rows whose label arrived.
    """
    if labelled.num_rows == 0:
        return []
    days = _day_strings(labelled.column(predlog.TS))
    y = labelled.column(schema.LABEL).to_numpy()
    s = labelled.column(predlog.PROBABILITY).to_numpy()
    d = labelled.column(predlog.DECISION).to_numpy()
    logged_per_day: dict[str, int] = {}
    if logged is not None and logged.num_rows:
        names, counts = np.unique(_day_strings(logged.column(predlog.TS)), return_counts=True)
        logged_per_day = {str(n): int(c) for n, c in zip(names, counts, strict=True)}
    out = []
    for day in sorted(set(days.tolist())):
        m = days == day
        row: dict[str, Any] = {"date": day, **classification_quality(y[m], s[m], d[m])}
        if logged_per_day:
            row["n_logged"] = logged_per_day.get(day, 0)
            row["label_coverage"] = row["n"] / row["n_logged"] if row["n_logged"] else None
        out.append(row)
    return out


def mature_day_labels(labelled: pa.Table, by_day: list[dict[str, Any]], min_coverage: float) -> tuple[str | None, Any]:
    """The latest day whose label coverage reaches ``min_coverage``, and its labels.

    Labels that arrive within hours are not a random sample of a day: the early hours
    (where fraud concentrates at night) get theirs first. A label rate is only compared
    once most of a day's labels are in.
    """
    mature = [d for d in by_day if (d.get("label_coverage") or 0.0) >= min_coverage]
    if not mature:
        return None, np.zeros(0, dtype=np.int8)
    day = str(mature[-1]["date"])
    days = _day_strings(labelled.column(predlog.TS))
    return day, labelled.column(schema.LABEL).to_numpy()[days == day]


def target_drift(
    labels: npt.ArrayLike,
    reference_rate: float | None,
    *,
    p_value_threshold: float = 0.01,
    min_relative_change: float = 0.25,
) -> dict[str, Any]:
    """Has the label (fraud) rate moved from the reference rate?

    A two-sided z-test of the observed rate against the reference rate; drift when it is
    significant *and* the rate moved by at least ``min_relative_change`` (a million
    labelled rows make any wiggle significant; an operator cares about the size).
    """
    y = np.asarray(labels).astype(np.float64)
    n = int(y.size)
    rate = float(y.mean()) if n else None
    out: dict[str, Any] = {
        "n_labelled": n,
        "label_rate": rate,
        "ref_label_rate": reference_rate,
        "z": None,
        "p_value": None,
        "relative_change": None,
        "drifted": False,
    }
    if n == 0 or rate is None or reference_rate is None or not 0.0 < reference_rate < 1.0:
        return out
    se = math.sqrt(reference_rate * (1 - reference_rate) / n)
    z = (rate - reference_rate) / se
    p = math.erfc(abs(z) / math.sqrt(2))
    rel = rate / reference_rate - 1.0
    out.update(
        z=z, p_value=p, relative_change=rel, drifted=bool(p < p_value_threshold and abs(rel) >= min_relative_change)
    )
    return out


def score_shift(scores: npt.ArrayLike, ref_mean: float, ref_std: float) -> dict[str, Any]:
    """How far the mean score moved from the validation mean (relative change and z)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {"mean": None, "ref_mean": ref_mean, "relative_change": None, "z": None}
    mean = float(s.mean())
    z = (mean - ref_mean) / (ref_std / math.sqrt(s.size)) if ref_std > 0 else None
    rel = mean / ref_mean - 1.0 if ref_mean > 0 else None
    return {"mean": mean, "ref_mean": ref_mean, "relative_change": rel, "z": z}


def decision_rate(decisions: Sequence[int] | npt.ArrayLike) -> float | None:
    """Share of rows the model flagged as fraud."""
    d = np.asarray(decisions)
    return float(d.astype(np.float64).mean()) if d.size else None
