"""Histogram binning and the Population Stability Index, vectorized.

One binning rule is shared by the reference profile (built at training time) and the
drift job (run on the prediction log), so that both sides count rows in exactly the
same bins:

* ``bin_edges`` has one more entry than ``proportions``: ``[lo, c_1, ..., c_{k-1}, hi]``.
  Bins are left-closed, ``[c_i, c_{i+1})``; the first bin extends to minus infinity
  and the last to plus infinity, so that values outside the reference range are still
  counted (in the outer bins), never dropped. ``lo``/``hi`` are the reference minimum
  and maximum, kept for reading only.
* A feature with at most :data:`MAX_DISCRETE_VALUES` distinct values (flags, small
  counts, categories) gets one bin per value: the cuts are the values themselves.
  This is the rule Evidently uses to treat a numeric column as categorical. When
  current data is compared, values the reference never had go to one extra "unseen"
  bin whose reference proportion is zero (as Evidently does with a new category).
* Other features get quantile bins (:data:`DEFAULT_N_BINS` of equal reference mass);
  the cuts are actual reference values, so comparisons in float32 are exact and no
  reference bin is ever empty.

Counting compares the float32 column with each cut and counts (see :func:`bin_counts`):
a million rows take a few milliseconds per feature.

PSI is ``sum((p_ref - p_cur) * ln(p_ref / p_cur))``. Empty bins are filled the way
Evidently's ``get_binned_data`` fills them (``1e-4``, or a millionth of the smallest
non-zero proportion when that is smaller), so that on the same bins our figure and
Evidently's are the same number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_DISCRETE_VALUES = 20
DEFAULT_N_BINS = 20

FloatArray = npt.NDArray[np.float64]
F32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Bins:
    """The bins of one column: float32 cut points and whether the column is discrete."""

    cuts: F32Array  # interior cut points, ascending, unique (k - 1 of them for k bins)
    lo: float
    hi: float
    discrete: bool

    @property
    def n_bins(self) -> int:
        return int(self.cuts.size) + 1

    def edges(self) -> list[float]:
        """``[lo, cuts..., hi]`` as plain floats (the profile's ``bin_edges``)."""
        return [self.lo, *(float(c) for c in self.cuts), self.hi]

    @classmethod
    def from_edges(cls, edges: list[float], *, discrete: bool = False) -> Bins:
        """Rebuild bins from a profile's ``bin_edges`` (checked: at least two, ascending)."""
        if len(edges) < 2:
            raise ValueError(f"bin_edges needs at least 2 entries, got {len(edges)}")
        cuts = np.asarray(edges[1:-1], dtype=np.float32)
        if cuts.size and not bool(np.all(np.diff(cuts) > 0)):
            raise ValueError("bin_edges must be strictly ascending between the outer edges")
        return cls(cuts=cuts, lo=float(edges[0]), hi=float(edges[-1]), discrete=discrete)


def as_f32(values: npt.ArrayLike) -> F32Array:
    """A 1-D float32 view or copy of ``values``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def drop_nan(x: F32Array) -> tuple[F32Array, int]:
    """The finite-or-infinite (non-NaN) values and the number of NaNs removed."""
    nan = np.isnan(x)
    n_nan = int(np.count_nonzero(nan))
    return (x[~nan] if n_nan else x), n_nan


def fit_bins(x: F32Array, n_bins: int = DEFAULT_N_BINS) -> Bins:
    """Bins of a reference column (NaNs must be removed first; at least one value)."""
    if x.size == 0:
        raise ValueError("cannot bin an empty column (no non-null reference values)")
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2, got {n_bins}")
    s = np.sort(x)
    change = np.empty(s.size, dtype=bool)
    change[0] = True
    np.not_equal(s[1:], s[:-1], out=change[1:])
    n_unique = int(np.count_nonzero(change))
    lo, hi = float(s[0]), float(s[-1])
    if n_unique <= MAX_DISCRETE_VALUES:
        values = s[change]
        return Bins(cuts=values[1:].astype(np.float32), lo=lo, hi=hi, discrete=True)
    # Quantile cuts taken from the data itself ("lower" quantiles): exact in float32.
    positions = np.floor(np.arange(1, n_bins) / n_bins * (s.size - 1)).astype(np.int64)
    cuts = np.unique(s[positions])
    cuts = cuts[cuts > s[0]]  # a cut at the minimum would leave the first bin empty
    return Bins(cuts=cuts.astype(np.float32), lo=lo, hi=hi, discrete=False)


def count_nan(x: F32Array) -> int:
    """Number of NaNs in a float32 column."""
    return int(np.count_nonzero(np.isnan(x)))


def bin_counts(x: F32Array, cuts: F32Array, n_valid: int | None = None) -> IntArray:
    """Rows per bin (``len(cuts) + 1`` bins, left-closed ``[c_i, c_{i+1})``); NaNs are not counted.

    One ``x >= cut`` comparison and one ``count_nonzero`` per cut, differenced: about
    ten times faster than ``searchsorted`` + ``bincount`` for twenty bins, allocates a
    single boolean buffer, and releases the GIL (columns run in parallel threads).
    ``n_valid`` (rows that are not NaN) saves a pass when the caller knows it.
    """
    valid = x.size - count_nan(x) if n_valid is None else n_valid
    buf = np.empty(x.size, dtype=bool)
    at_least = np.empty(cuts.size + 2, dtype=np.int64)  # rows >= each cut, framed by n and 0
    at_least[0], at_least[-1] = valid, 0
    for k, cut in enumerate(cuts):
        np.greater_equal(x, cut, out=buf)  # NaN compares False: never counted
        at_least[k + 1] = np.count_nonzero(buf)
    return at_least[:-1] - at_least[1:]


def value_counts(x: F32Array, values: F32Array, n_valid: int | None = None) -> IntArray:
    """Rows per reference value, plus a last bin for values the reference never had."""
    valid = x.size - count_nan(x) if n_valid is None else n_valid
    buf = np.empty(x.size, dtype=bool)
    counts = np.empty(values.size + 1, dtype=np.int64)
    for k, value in enumerate(values):
        np.equal(x, value, out=buf)
        counts[k] = np.count_nonzero(buf)
    counts[-1] = valid - int(counts[:-1].sum())
    return counts


def current_counts(x: F32Array, bins: Bins, n_valid: int | None = None) -> IntArray:
    """Counts of current data in the reference bins (discrete bins get the unseen bin)."""
    if bins.discrete:
        values = np.concatenate([np.asarray([bins.lo], dtype=np.float32), bins.cuts])
        return value_counts(x, values, n_valid)
    return bin_counts(x, bins.cuts, n_valid)


def reference_for_current(bins: Bins, reference: FloatArray) -> FloatArray:
    """Reference proportions aligned with :func:`current_counts` (a 0 for the unseen bin)."""
    if bins.discrete:
        return np.append(reference, 0.0)
    return reference


def proportions(counts: IntArray) -> FloatArray:
    """Counts as proportions (all zeros for an empty column)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(counts.size, dtype=np.float64)
    return counts.astype(np.float64) / total


def fill_zeros(p: FloatArray) -> FloatArray:
    """Replace empty bins as Evidently does, so that the logarithm stays finite."""
    out = p.astype(np.float64, copy=True)
    nonzero = out[out != 0]
    if nonzero.size == 0:
        return out
    smallest = float(nonzero.min())
    out[out == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return out


def psi(reference: FloatArray, current: FloatArray) -> float:
    """Population Stability Index between two proportion vectors over the same bins."""
    if reference.shape != current.shape:
        raise ValueError(f"bin count mismatch: reference {reference.shape} vs current {current.shape}")
    if not current.any() or not reference.any():
        return float("nan")  # no rows on one side: drift is undefined, not zero
    r = fill_zeros(reference)
    c = fill_zeros(current)
    return float(np.sum((r - c) * np.log(r / c)))


def evidently_psi(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """PSI exactly as Evidently 0.7 computes it from two raw samples (no profile).

    A replica of ``evidently.legacy.calculations.stattests.utils.get_binned_data`` and
    ``psi._psi``: more than 20 distinct reference values -> Sturges equal-width bins
    over reference and current together; otherwise one bin per value of either side.
    Used to check our figures against Evidently's on the same bins; the drift job itself
    bins against the reference profile (quantile bins fixed at training time), since it
    has no raw reference data.
    """
    ref = np.asarray(reference)
    cur = np.asarray(current)
    ref_clean = ref[~np.isnan(ref)] if np.issubdtype(ref.dtype, np.floating) else ref
    cur_clean = cur[~np.isnan(cur)] if np.issubdtype(cur.dtype, np.floating) else cur
    n_vals = np.unique(ref_clean).size
    if n_vals > MAX_DISCRETE_VALUES:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        ref_p = np.histogram(ref, edges)[0] / len(ref)
        cur_p = np.histogram(cur, edges)[0] / len(cur)
    else:
        keys = np.union1d(ref_clean, cur_clean)
        ref_p = _counts_of(ref_clean, keys) / len(ref)
        cur_p = _counts_of(cur_clean, keys) / len(cur)
    r = fill_zeros(ref_p.astype(np.float64))
    c = fill_zeros(cur_p.astype(np.float64))
    return float(np.sum((r - c) * np.log(r / c)))


def _counts_of(x: npt.NDArray[Any], keys: npt.NDArray[Any]) -> FloatArray:
    return np.bincount(np.searchsorted(keys, x), minlength=keys.size).astype(np.float64)
