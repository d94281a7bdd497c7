"""The reference profile: what the drift job knows about a model's training data.

Built once at training time and shipped in the model bundle as
``reference_profile.json`` (see docs/CONTRACTS.md), it holds per feature the bins and
the reference proportions (see :mod:`fraudops.monitoring.binning` for the binning
rule), summary statistics and the null rate; the score distribution on validation
data; and the label rate. The drift job then needs neither the training set nor the
model code.

Example (training side)::

    profile = build_reference_profile(X_train, schema.FEATURE_NAMES, val_scores, y_train)
    save_profile(profile, bundle_dir / "reference_profile.json")
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from fraudops import schema
from fraudops.monitoring.binning import (
    DEFAULT_N_BINS,
    Bins,
    as_f32,
    bin_counts,
    drop_nan,
    fit_bins,
    proportions,
)

PROFILE_FORMAT_VERSION = 1
PROFILE_FILENAME = "reference_profile.json"

Profile = dict[str, Any]


class ProfileError(ValueError):
    """A reference profile that cannot be built, read or used."""


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _column_profile(values: npt.NDArray[Any], n_bins: int, what: str) -> dict[str, Any]:
    x = as_f32(values)
    clean, n_nan = drop_nan(x)
    if clean.size == 0:
        raise ProfileError(f"{what}: every value is null, nothing to profile")
    if not bool(np.isfinite(clean).all()):
        raise ProfileError(f"{what}: contains infinite values; clean the data before profiling")
    bins = fit_bins(clean, n_bins)
    props = proportions(bin_counts(clean, bins.cuts))
    c64 = clean.astype(np.float64)
    out: dict[str, Any] = {
        "bin_edges": bins.edges(),
        "proportions": [float(p) for p in props],
        "discrete": bins.discrete,
        "mean": float(c64.mean()),
        "std": float(c64.std()),
        "min": bins.lo,
        "max": bins.hi,
        "null_rate": n_nan / x.size,
    }
    return out


def build_reference_profile(
    features: np.ndarray,
    feature_names: Sequence[str],
    scores: np.ndarray,
    labels: np.ndarray | None,
    *,
    n_bins: int = DEFAULT_N_BINS,
) -> Profile:
    """Build the reference profile of a model's training data.

    ``features`` is ``[n_rows, n_features]`` in the order of ``feature_names`` (the
    training rows, or a large sample of them); ``scores`` are the model's probabilities
    on validation data (any length); ``labels`` (0/1, any length, or None when unknown)
    give the label rate. Returns the JSON-ready dict of the contract.
    """
    X = np.asarray(features)
    names = list(feature_names)
    if X.ndim != 2:
        raise ProfileError(f"features must be 2-D [rows, features], got shape {X.shape}")
    if X.shape[1] != len(names):
        raise ProfileError(f"features has {X.shape[1]} columns but {len(names)} feature names were given")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ProfileError(f"duplicate feature names: {', '.join(dupes)}")
    if X.shape[0] == 0:
        raise ProfileError("features has no rows")
    score_arr = np.asarray(scores)
    if score_arr.ndim == 2 and score_arr.shape[1] == 1:
        score_arr = score_arr[:, 0]
    if score_arr.ndim != 1 or score_arr.size == 0:
        raise ProfileError(f"scores must be a non-empty 1-D array, got shape {score_arr.shape}")

    feats: dict[str, Any] = {}
    for j, name in enumerate(names):
        feats[name] = _column_profile(X[:, j], n_bins, f"feature {name!r}")
    score = _column_profile(score_arr, n_bins, "scores")

    label_rate: float | None = None
    n_labels = 0
    if labels is not None:
        y = np.asarray(labels).ravel()
        if y.size:
            if not bool(np.isin(y, (0, 1)).all()):
                raise ProfileError("labels must be 0/1")
            label_rate = float(y.astype(np.float64).mean())
            n_labels = int(y.size)

    return {
        "format_version": PROFILE_FORMAT_VERSION,
        "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n_rows": int(X.shape[0]),
        "n_bins": n_bins,
        "label_rate": label_rate,
        "n_labels": n_labels,
        "n_score_rows": int(score_arr.size),
        "features": feats,
        "score": score,
    }


def _check_column(name: str, col: Any) -> None:
    if not isinstance(col, dict):
        raise ProfileError(f"profile entry {name!r} is not an object")
    for key in ("bin_edges", "proportions", "mean", "std"):
        if key not in col:
            raise ProfileError(f"profile entry {name!r} lacks {key!r}")
    edges, props = col["bin_edges"], col["proportions"]
    if not isinstance(edges, list) or not isinstance(props, list):
        raise ProfileError(f"profile entry {name!r}: bin_edges and proportions must be lists")
    if len(edges) != len(props) + 1:
        raise ProfileError(
            f"profile entry {name!r}: {len(edges)} bin_edges for {len(props)} proportions (expected one more)"
        )
    try:
        Bins.from_edges([float(e) for e in edges])
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"profile entry {name!r}: {exc}") from None
    total = float(sum(props))
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ProfileError(f"profile entry {name!r}: proportions sum to {total}, not 1")


def validate_profile(profile: Profile) -> Profile:
    """Check the structure of a profile (as read from JSON); returns it unchanged."""
    if not isinstance(profile, dict):
        raise ProfileError("a reference profile must be a JSON object")
    version = profile.get("format_version")
    if version != PROFILE_FORMAT_VERSION:
        raise ProfileError(f"unsupported profile format_version {version!r} (this code reads {PROFILE_FORMAT_VERSION})")
    feats = profile.get("features")
    if not isinstance(feats, dict) or not feats:
        raise ProfileError("profile has no 'features'")
    for name, col in feats.items():
        _check_column(name, col)
    if "score" not in profile:
        raise ProfileError("profile has no 'score' distribution")
    _check_column("score", profile["score"])
    return profile


def profile_bins(profile: Profile, name: str) -> tuple[Bins, npt.NDArray[np.float64]]:
    """The bins and reference proportions of a feature (or ``"score"``)."""
    col = profile["score"] if name == "score" else profile["features"].get(name)
    if col is None:
        raise ProfileError(f"feature {name!r} is not in the reference profile")
    bins = Bins.from_edges([float(e) for e in col["bin_edges"]], discrete=bool(col.get("discrete", False)))
    return bins, np.asarray(col["proportions"], dtype=np.float64)


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write a profile as JSON, atomically (a crash never leaves half a file)."""
    validate_profile(profile)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(profile, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data + b"\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_profile(path: str | Path) -> Profile:
    """Read and check a profile; a directory means its ``reference_profile.json``."""
    source = Path(path)
    if source.is_dir():
        source = source / PROFILE_FILENAME
    if not source.is_file():
        raise ProfileError(f"reference profile not found: {source}")
    try:
        profile = orjson.loads(source.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ProfileError(f"reference profile {source} is not valid JSON: {exc}") from None
    try:
        return validate_profile(profile)
    except ProfileError as exc:
        raise ProfileError(f"{source}: {exc}") from None
