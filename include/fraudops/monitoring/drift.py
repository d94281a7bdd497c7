"""Feature and prediction drift of logged traffic against a reference profile.

PSI per feature over the profile's bins (drift at ``psi >= settings.drift.psi_threshold``,
as Evidently decides it), the share of drifted features (dataset drift when it is
above ``dataset_drift_share``, an alert when above ``alert_share``), and the PSI of the
score distribution against the validation scores of the profile.

Each column is counted by comparing it with its cut points (float32, one boolean
buffer), columns in a small thread pool (NumPy releases the GIL there): a million rows
by 128 features take well under a second once read.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fraudops.monitoring.binning import (
    as_f32,
    count_nan,
    current_counts,
    proportions,
    psi,
    reference_for_current,
)
from fraudops.monitoring.profile import Profile, ProfileError, profile_bins

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops.settings import DriftSettings

ColumnSource = Mapping[str, npt.ArrayLike]


@dataclass(frozen=True, slots=True)
class DriftThresholds:
    """When a feature drifts, when the dataset drifts, when to alert."""

    psi: float = 0.2
    dataset_share: float = 0.3
    alert_share: float = 0.5

    @classmethod
    def from_settings(cls, drift: DriftSettings) -> DriftThresholds:
        return cls(psi=drift.psi_threshold, dataset_share=drift.dataset_drift_share, alert_share=drift.alert_share)


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """PSI of one column against its reference bins, with the moments on both sides."""

    name: str
    psi: float
    drifted: bool
    n: int
    mean: float | None
    ref_mean: float
    null_rate: float
    ref_null_rate: float
    excluded: bool = False  # computed and reported, but not counted in the drift share


@dataclass(slots=True)
class DriftResult:
    """Drift of one batch of traffic against the reference profile."""

    n_rows: int
    thresholds: DriftThresholds
    features: list[ColumnDrift]
    score: ColumnDrift | None

    @property
    def counted(self) -> list[ColumnDrift]:
        """The features that count toward the drift share (all but the excluded)."""
        return [f for f in self.features if not f.excluded]

    @property
    def n_drifted(self) -> int:
        return sum(1 for f in self.counted if f.drifted)

    @property
    def drift_share(self) -> float:
        counted = self.counted
        return self.n_drifted / len(counted) if counted else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.n_rows > 0 and self.drift_share > self.thresholds.dataset_share

    @property
    def alert(self) -> bool:
        return self.n_rows > 0 and self.drift_share > self.thresholds.alert_share

    def top_drifted(self, k: int = 10) -> list[ColumnDrift]:
        """The ``k`` drifted features with the largest PSI, largest first."""
        ranked = sorted((f for f in self.counted if f.drifted), key=lambda f: -f.psi)
        return ranked[:k]

    def to_dict(self, top_k: int = 10) -> dict[str, Any]:
        """The JSON-ready summary (NaN written as null)."""
        out: dict[str, Any] = _clean(
            {
                "n_rows": self.n_rows,
                "thresholds": asdict(self.thresholds),
                "n_features": len(self.counted),
                "excluded_features": [f.name for f in self.features if f.excluded],
                "n_drifted": self.n_drifted,
                "drift_share": self.drift_share,
                "dataset_drift": self.dataset_drift,
                "alert": self.alert,
                "top_drifted": [{"feature": f.name, "psi": f.psi} for f in self.top_drifted(top_k)],
                "features": {f.name: _column_dict(f) for f in self.features},
                "prediction": _column_dict(self.score) if self.score else None,
            }
        )
        return out


def _column_dict(c: ColumnDrift) -> dict[str, Any]:
    d = asdict(c)
    d.pop("name")
    return d


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def column_drift(name: str, values: npt.ArrayLike, profile: Profile, psi_threshold: float) -> ColumnDrift:
    """PSI of one column (a feature, or ``"score"``) against the profile's bins."""
    x = as_f32(values)
    bins, ref = profile_bins(profile, name)
    col = profile["score"] if name == "score" else profile["features"][name]
    n_nan = count_nan(x)
    n_valid = x.size - n_nan
    counts = current_counts(x, bins, n_valid)
    value = psi(reference_for_current(bins, ref), proportions(counts))
    mean: float | None = None
    if n_valid:
        mean = float(x.mean(dtype=np.float64) if not n_nan else np.nanmean(x, dtype=np.float64))
    return ColumnDrift(
        name=name,
        psi=value,
        drifted=bool(value >= psi_threshold),  # NaN (no rows) compares False
        n=n_valid,
        mean=mean,
        ref_mean=float(col["mean"]),
        null_rate=n_nan / x.size if x.size else 0.0,
        ref_null_rate=float(col.get("null_rate", 0.0)),
    )


def _column(source: pa.Table | ColumnSource, name: str) -> npt.NDArray[np.float32]:
    if isinstance(source, Mapping):
        return as_f32(source[name])
    return as_f32(source.column(name).to_numpy())


def compute_drift(
    source: pa.Table | ColumnSource,
    profile: Profile,
    thresholds: DriftThresholds | None = None,
    *,
    score_column: str | None = "probability",
    exclude: Collection[str] = (),
    workers: int = 2,
) -> DriftResult:
    """Drift of every profiled feature (and the score) of ``source`` against ``profile``.

    ``source`` is an Arrow table (e.g. a day of the prediction log) or a mapping of
    column name to array. Every feature of the profile must be present: a missing one
    raises :class:`ProfileError` naming it (the log and the model disagree). Features in
    ``exclude`` are measured and reported but do not count toward the drift share.
    """
    th = thresholds or DriftThresholds()
    names = list(profile["features"])
    available = set(source.keys()) if isinstance(source, Mapping) else set(source.column_names)
    missing = [n for n in names if n not in available]
    if missing:
        raise ProfileError(
            f"{len(missing)} profiled feature(s) are not in the data: {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
        )
    n_rows = _column(source, names[0]).size if isinstance(source, Mapping) else source.num_rows

    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ProfileError(f"cannot exclude feature(s) the profile does not have: {', '.join(unknown)}")

    def one(name: str) -> ColumnDrift:
        result = column_drift(name, _column(source, name), profile, th.psi)
        return replace(result, excluded=True) if name in exclude else result

    if workers > 1 and len(names) > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="psi") as pool:
            features = list(pool.map(one, names))
    else:
        features = [one(n) for n in names]
    score = None
    if score_column is not None and score_column in available:
        score = column_drift("score", _column(source, score_column), profile, th.psi)
    return DriftResult(n_rows=n_rows, thresholds=th, features=features, score=score)
