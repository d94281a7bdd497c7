"""The daily drift job on a real prediction log on disk: results per day, idempotent, clear failures."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fraudops.data.generate import simulate_labels
from fraudops.monitoring import predlog
from fraudops.monitoring.job import (
    METRICS_FILE,
    SUMMARY_FILE,
    DriftJobError,
    champion_profile_path,
    read_summary,
    run_drift_job,
)
from fraudops.monitoring.profile import Profile, save_profile
from fraudops.monitoring.simulate import StandInScorer, reference_setup, simulate_day
from fraudops.settings import Settings, get_settings

D1, D2, D3 = date(2026, 10, 20), date(2026, 10, 21), date(2026, 10, 22)


@pytest.fixture(scope="module")
def reference() -> tuple[Profile, StandInScorer, float]:
    return reference_setup(20_000, seed=21)


@pytest.fixture
def traffic(fraudops_home: Path, reference: tuple[Profile, StandInScorer, float]) -> tuple[Settings, pa.Table]:
    """Three logged days (clean, fraud surge, new market), labels, and the champion's bundle profile."""
    profile, scorer, threshold = reference
    cfg = get_settings()
    labels = []
    for day, scenario in ((D1, "baseline"), (D2, "fraud_surge"), (D3, "new_market")):
        records, tx = simulate_day(
            day, 3_000, scorer, scenario=scenario, seed=21, threshold=threshold, model_version="3"
        )
        # Two flushes a day, as the predictor writes them; plus some challenger traffic.
        predlog.write_log_batch(records.slice(0, 1_000), cfg.prediction_log_dir)
        predlog.write_log_batch(records.slice(1_000), cfg.prediction_log_dir)
        chall, _ = simulate_day(
            day, 200, scorer, scenario=scenario, seed=21, variant="challenger", model_version="4", id_prefix="c-"
        )
        predlog.write_log_batch(chall, cfg.prediction_log_dir)
        labels.append(simulate_labels(tx, mean_delay_days=1.0))
    save_profile(profile, champion_profile_path(cfg, "3"))
    return cfg, pa.concat_tables(labels)


def test_log_reader_filters_interval_and_variant(traffic: tuple[Settings, pa.Table]) -> None:
    cfg, _ = traffic
    start = datetime(2026, 10, 20, tzinfo=UTC)
    day = predlog.read_prediction_log(cfg.prediction_log_dir, start, start + timedelta(days=1))
    assert day.num_rows == 3_000
    assert set(day.column("variant").to_pylist()) == {"champion"}
    both = predlog.read_prediction_log(cfg.prediction_log_dir, start, start + timedelta(days=2), variants=None)
    assert both.num_rows == 2 * 3_200
    half = predlog.read_prediction_log(
        cfg.prediction_log_dir, start + timedelta(hours=12), start + timedelta(days=1), columns=["ts", "amount"]
    )
    assert 0 < half.num_rows < 3_000 and half.column_names == ["ts", "amount"]
    assert min(half.column("ts").to_pylist()) >= start + timedelta(hours=12)
    empty = predlog.read_prediction_log(cfg.prediction_log_dir, start - timedelta(days=9), start - timedelta(days=8))
    assert empty.num_rows == 0
    with pytest.raises(predlog.PredictionLogError, match="unknown variant"):
        predlog.read_prediction_log(cfg.prediction_log_dir, start, start + timedelta(days=1), variants=["blue"])


def test_daily_results_per_scenario(traffic: tuple[Settings, pa.Table]) -> None:
    cfg, labels = traffic
    clean = run_drift_job(D1, labels=labels, report=False)
    surge = run_drift_job(D2, labels=labels, report=False)
    market = run_drift_job(D3, labels=labels, report=False)

    for summary, day in ((clean, D1), (surge, D2), (market, D3)):
        assert summary["status"] == "ok" and summary["n_rows"] == 3_000
        assert summary["model_version"] == "3" and summary["model_versions"] == {"3": 3_000}
        assert summary["profile"]["source"] == str(champion_profile_path(cfg, "3"))
        files = sorted(p.name for p in (cfg.monitoring_dir / day.isoformat()).iterdir())
        assert files == [METRICS_FILE, SUMMARY_FILE]
        assert read_summary(cfg.monitoring_dir, day) == summary

    assert clean["drift"]["n_drifted"] == 0 and not clean["drift"]["dataset_drift"]
    assert clean["alert_reasons"] == []
    assert not surge["drift"]["dataset_drift"]
    # Target drift waits for a day whose labels are mostly in (mean delay 1 day here): the
    # day's own labels are a third in and skewed to its early hours.
    assert clean["target"]["date"] is None and not clean["target"]["drifted"]
    assert 0.2 < clean["target"]["day_label_coverage"] < 0.5
    assert surge["target"]["date"] == "2026-10-20" and not surge["target"]["drifted"]
    assert market["target"]["date"] == "2026-10-21" and market["target"]["label_coverage"] > 0.5
    assert market["target"]["drifted"] and market["target"]["label_rate"] > 2 * market["target"]["ref_label_rate"]
    assert market["drift"]["dataset_drift"] and market["drift"]["drift_share"] > 0.5
    assert market["prediction"]["drifted"] and market["retrain_recommended"]
    assert any("alert level" in r for r in market["alert_reasons"])

    # Quality by day over the labels known at the end of each day (they arrive late).
    by_day = market["quality"]["by_day"]
    assert [d["date"] for d in by_day] == ["2026-10-20", "2026-10-21", "2026-10-22"]
    assert by_day[0]["n"] > by_day[2]["n"] > 0  # older days have more of their labels
    assert 0.5 < by_day[0]["auc_roc"] <= 1.0
    assert [d["n_logged"] for d in by_day] == [3_000, 3_000, 3_000]
    assert by_day[0]["label_coverage"] > by_day[1]["label_coverage"] > by_day[2]["label_coverage"]
    metrics = (cfg.monitoring_dir / D3.isoformat() / METRICS_FILE).read_text()
    assert 'fraudops_drift_share{model_name="fraud-detector",model_version="3"}' in metrics


def test_rerunning_a_day_rewrites_that_day_only(traffic: tuple[Settings, pa.Table]) -> None:
    cfg, _ = traffic
    first_d1 = run_drift_job(D1, report=False, now=datetime(2026, 10, 21, 1, tzinfo=UTC))
    run_drift_job(D2, report=False)
    d2_before = (cfg.monitoring_dir / D2.isoformat() / SUMMARY_FILE).read_bytes()
    d2_mtime = (cfg.monitoring_dir / D2.isoformat() / SUMMARY_FILE).stat().st_mtime_ns

    # Same inputs: the same figures (only the generation time differs).
    again = run_drift_job(D1, report=False, now=datetime(2026, 10, 21, 1, tzinfo=UTC))
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first_d1.items() if k != "seconds"}

    # A late flush for day 1: the re-run sees it; day 2 stays byte for byte as it was.
    _, scorer, threshold = reference_setup(20_000, seed=21)
    late, _ = simulate_day(D1, 500, scorer, seed=99, threshold=threshold, model_version="3", id_prefix="late-")
    predlog.write_log_batch(late, cfg.prediction_log_dir)
    rerun = run_drift_job(D1, report=False)
    assert rerun["n_rows"] == 3_500
    assert read_summary(cfg.monitoring_dir, D1)["n_rows"] == 3_500
    assert (cfg.monitoring_dir / D2.isoformat() / SUMMARY_FILE).read_bytes() == d2_before
    assert (cfg.monitoring_dir / D2.isoformat() / SUMMARY_FILE).stat().st_mtime_ns == d2_mtime
    leftovers = [p.name for p in cfg.monitoring_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_day_without_traffic_is_recorded_as_such(traffic: tuple[Settings, pa.Table]) -> None:
    cfg, _ = traffic
    summary = run_drift_job(date(2026, 11, 5), report=False)
    assert summary["status"] == "no_data" and summary["n_rows"] == 0 and summary["drift"] is None
    assert read_summary(cfg.monitoring_dir, date(2026, 11, 5))["status"] == "no_data"


def test_missing_profile_and_broken_log_fail_clearly(traffic: tuple[Settings, pa.Table]) -> None:
    cfg, _ = traffic
    champion_profile_path(cfg, "3").unlink()
    with pytest.raises(DriftJobError, match="no usable reference profile for the champion \\(version 3\\)"):
        run_drift_job(D1, report=False)
    assert not (cfg.monitoring_dir / D1.isoformat()).exists()  # nothing half-written

    bad = cfg.home / "bad-log"
    part = bad / "date=2026-10-20"
    part.mkdir(parents=True)
    pq.write_table(
        pa.table({"ts": pa.array([datetime(2026, 10, 20, 5, tzinfo=UTC)]), "variant": ["champion"]}),
        part / "part-x.parquet",
    )
    profile, _, _ = reference_setup(20_000, seed=21)
    with pytest.raises(DriftJobError, match="lacks column"):
        run_drift_job(D1, report=False, log_root=bad, profile=profile)
    (part / "part-y.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(DriftJobError):
        run_drift_job(D1, report=False, log_root=bad, profile=profile)


def test_cli_drift_and_retrain_decision(traffic: tuple[Settings, pa.Table], tmp_path: Path) -> None:
    from fraudops.cli.main import app

    _, labels = traffic
    labels_path = tmp_path / "labels.parquet"
    pq.write_table(labels, labels_path)
    runner = CliRunner()
    result = runner.invoke(
        app, ["monitor", "drift", "--date", "2026-10-22", "--labels", str(labels_path), "--no-report"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["date"] == "2026-10-22" and out["dataset_drift"] is True and out["n_rows"] == 3_000
    decision = runner.invoke(
        app, ["monitor", "retrain-decision", "--date", "2026-10-22", "--last-triggered", "2026-10-22T12:00:00"]
    )
    assert decision.exit_code == 0, decision.output
    assert json.loads(decision.stdout)["trigger"] is False  # in cooldown: 12 h before the day's end
    bad = runner.invoke(app, ["monitor", "drift", "--date", "2026-13-01"])
    assert bad.exit_code != 0 and "2026-13-01" in bad.output
    missing = runner.invoke(app, ["monitor", "drift", "--date", "2026-10-22", "--profile", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_challenger_traffic_drives_the_canary_command(traffic: tuple[Settings, pa.Table], tmp_path: Path) -> None:
    from fraudops.cli.main import app

    _, labels = traffic
    labels_path = tmp_path / "labels.parquet"
    pq.write_table(labels, labels_path)
    result = CliRunner().invoke(
        app,
        [
            "monitor",
            "canary",
            "--start",
            "2026-10-20",
            "--end",
            "2026-10-21",
            "--labels",
            str(labels_path),
            "--watch-elapsed-hours",
            "24",
        ],
    )
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["challenger"]["n_requests"] == 200 and decision["champion"]["n_requests"] == 3_000
    assert decision["action"] == "promote", decision["reason"]
    assert np.isfinite(decision["score_psi"])


def test_cli_simulate_then_drift(fraudops_home: Path, tmp_path: Path) -> None:
    from fraudops.cli.main import app

    runner = CliRunner()
    profile = tmp_path / "profile.json"
    labels = tmp_path / "labels.parquet"
    sim = runner.invoke(
        app,
        [
            "monitor",
            "simulate",
            "--date",
            "2026-10-20",
            "--rows",
            "2000",
            "--scenario",
            "merchant_mix",
            "--challenger-rows",
            "300",
            "--profile-out",
            str(profile),
            "--labels-out",
            str(labels),
        ],
    )
    assert sim.exit_code == 0, sim.output
    assert profile.is_file() and labels.is_file() and json.loads(sim.stdout)["rows"] == 2_000
    out = runner.invoke(
        app,
        ["monitor", "drift", "--date", "2026-10-20", "--profile", str(profile), "--labels", str(labels), "--no-report"],
    )
    assert out.exit_code == 0, out.output
    brief = json.loads(out.stdout)
    assert brief["n_rows"] == 2_000 and not brief["dataset_drift"]
    assert "merchant_category_code" in {t["feature"] for t in brief["top_drifted"]}
    bad = runner.invoke(app, ["monitor", "simulate", "--date", "2026-10-20", "--scenario", "mars"])
    assert bad.exit_code == 1 and "unknown scenario" in bad.output
