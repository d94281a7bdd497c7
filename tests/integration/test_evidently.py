"""Our PSI against Evidently 0.7's DataDriftPreset(method="psi") on the same data, and the HTML report.

Two comparisons, on the same reference and current rows:

* Same bins: our vectorized replica of Evidently's binning (``evidently_psi``) gives
  Evidently's PSI figures to floating-point precision, feature by feature, and so the
  same verdicts.
* The drift job's own bins (quantiles of the reference, fixed in the profile at training
  time) give the same dataset verdict; per-feature figures differ where the binning
  does: Evidently uses Sturges equal-width bins over reference + current, which put
  most of a heavy-tailed feature (amounts) in one or two bins and so see less of a
  shift there. Discrete features (one bin per value) agree.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudops import schema
from fraudops.data.generate import generate_transactions
from fraudops.monitoring import predlog
from fraudops.monitoring.binning import evidently_psi
from fraudops.monitoring.drift import DriftThresholds, compute_drift
from fraudops.monitoring.job import REPORT_FILE, run_drift_job
from fraudops.monitoring.profile import Profile, build_reference_profile
from fraudops.monitoring.report import evidently_drift
from fraudops.monitoring.simulate import DEFAULT_CARDS, feature_matrix, fit_stand_in_scorer, simulate_day
from fraudops.settings import get_settings

pytestmark = pytest.mark.slow  # Evidently imports in ~15 s and needs a few seconds per run

DAY = date(2026, 10, 20)
SEED = 41
FEATURES = list(schema.FEATURE_NAMES)


@pytest.fixture(scope="module")
def reference() -> tuple[pd.DataFrame, Profile, object]:
    train = generate_transactions(6_000, seed=SEED, n_cards=DEFAULT_CARDS)
    scorer = fit_stand_in_scorer(train)
    X = feature_matrix(train)
    profile = build_reference_profile(X, FEATURES, scorer(X), train.column(schema.LABEL).to_numpy())
    return pd.DataFrame(X, columns=FEATURES), profile, scorer


# Evidently costs ~0.1 s per column whatever the rows: every feature on the scenario that
# moves most of them, the non-latent features (amounts, counts, flags, card aggregates) on
# the others.
NON_LATENT = [f.name for f in schema.FEATURES if f.kind != "latent"]


@pytest.mark.parametrize(
    ("scenario", "columns"),
    [("new_market", FEATURES), ("baseline", NON_LATENT), ("amount_inflation", NON_LATENT)],
    ids=["new_market-all", "baseline-non_latent", "amount_inflation-non_latent"],
)
def test_psi_and_verdicts_agree_with_evidently(
    scenario: str, columns: list[str], reference: tuple[pd.DataFrame, Profile, object]
) -> None:
    ref_df, full_profile, scorer = reference
    profile = {**full_profile, "features": {f: full_profile["features"][f] for f in columns}}
    records, _ = simulate_day(DAY, 3_000, scorer, scenario=scenario, seed=SEED)  # type: ignore[arg-type]
    cur_df = pd.DataFrame(feature_matrix(records), columns=FEATURES)
    th = DriftThresholds()
    ev = evidently_drift(ref_df, cur_df, columns, psi_threshold=th.psi, drift_share=th.dataset_share)
    assert set(ev.psi) == set(columns)

    # 1. Same statistic, same bins: the same figures and verdicts, feature by feature.
    replica = {f: evidently_psi(ref_df[f].to_numpy(), cur_df[f].to_numpy()) for f in columns}
    for f in columns:
        assert replica[f] == pytest.approx(ev.psi[f], rel=1e-6, abs=1e-9), f
    assert {f: v >= th.psi for f, v in replica.items()} == ev.drifted

    # 2. The drift job's profile bins: the same dataset verdict, per-feature verdicts
    #    that differ only on continuous features, where the binning differs.
    ours = compute_drift(records, profile, th, score_column=None)
    our_verdicts = {c.name: c.drifted for c in ours.features}
    assert (ours.drift_share >= th.dataset_share) == ev.dataset_drift
    assert ours.drift_share == pytest.approx(ev.drift_share, abs=0.05)
    disagree = [f for f in columns if our_verdicts[f] != ev.drifted[f]]
    assert len(disagree) <= 0.05 * len(columns), disagree
    for f in disagree:
        assert not profile["features"][f]["discrete"], f"discrete feature {f} should bin like Evidently"
    discrete = [f for f in columns if profile["features"][f]["discrete"]]
    for f in discrete:
        col = next(c for c in ours.features if c.name == f)
        if ev.psi[f] > 0.05:  # tiny figures depend on Evidently's 1e-4 zero fill; big ones must match closely
            assert col.psi == pytest.approx(ev.psi[f], rel=0.15), f


def test_daily_job_writes_the_evidently_report(
    fraudops_home: Path, reference: tuple[pd.DataFrame, Profile, object]
) -> None:
    _, profile, scorer = reference
    records, _ = simulate_day(DAY, 2_000, scorer, scenario="new_market", seed=SEED, model_version="2")  # type: ignore[arg-type]
    predlog.write_log_batch(records, get_settings().prediction_log_dir)
    summary = run_drift_job(DAY, profile=profile, report=True, report_rows=500)
    info = summary["report"]
    assert info["path"] == REPORT_FILE and info["current_rows"] == 500 and info["columns"] == len(FEATURES) + 1
    assert "synthesized" in info["reference"]
    html = (get_settings().monitoring_dir / DAY.isoformat() / REPORT_FILE).read_text()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    for name in ("merchant_category_code", "latent_v77", "probability"):
        assert name in html
    # Re-running without the report replaces the day: no stale report is left behind.
    run_drift_job(DAY, profile=profile, report=False)
    assert not (get_settings().monitoring_dir / DAY.isoformat() / REPORT_FILE).exists()
    assert np.isfinite(summary["drift"]["drift_share"])
