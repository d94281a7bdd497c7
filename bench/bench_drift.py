"""Benchmark: the daily drift job at a million logged rows, and against Evidently at 100k rows.

Run: ``.venv/bin/python bench/bench_drift.py`` (about two minutes; ``--rows``/``--evidently-rows``
to change the sizes).

1. Our drift job (``run_drift_job``: read the day's Parquet log, PSI of every schema
   feature and of the score against the reference profile, summary written) on
   ``--rows`` logged rows, in a fresh child process: wall time and peak memory (max RSS).
   Targets: under 10 s and 4 GiB at one million rows.
2. The same job on ``--evidently-rows`` rows, and Evidently's ``DataDriftPreset`` with the
   same statistic (PSI, threshold 0.2) on the same rows against the raw reference rows the
   profile was built from, in the same run: the ratio of wall times (target >= 20x), and
   the verdicts: the dataset verdict and the per-feature verdicts, both for our replica
   of Evidently's binning (same bins: must be identical) and for the job's profile bins.

The traffic is the ``new_market`` scenario (most features move), scored by the stand-in
logistic model of ``fraudops.monitoring.simulate``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

DAY = date(2026, 10, 20)


def _vm_kib(field: str) -> int:
    """A /proc/self/status figure in KiB. VmHWM (peak resident set) starts afresh at exec,
    unlike getrusage's ru_maxrss, which a child inherits from the parent that forked it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: best effort


def _child(log_root: str, profile_path: str, out_dir: str) -> None:
    """Run the drift job once, in this (fresh) process, and print its figures as JSON."""
    # Imports timed apart, as Evidently's are: the job imports these lazily on first use.
    started = time.perf_counter()
    import pyarrow.compute
    import pyarrow.dataset
    import pyarrow.parquet  # noqa: F401

    from fraudops.monitoring.job import run_drift_job
    from fraudops.monitoring.profile import load_profile
    from fraudops.settings import Settings

    import_s = time.perf_counter() - started

    profile = load_profile(profile_path)
    settings = Settings(home=Path(out_dir))
    rss_before = _vm_kib("VmHWM")
    started = time.perf_counter()
    summary = run_drift_job(DAY, settings=settings, profile=profile, log_root=log_root, report=False)
    wall = time.perf_counter() - started
    peak = _vm_kib("VmHWM")
    # A second run in the same process: the first pays one-off imports and page-cache misses.
    started = time.perf_counter()
    run_drift_job(DAY, settings=settings, profile=profile, log_root=log_root, report=False)
    warm = time.perf_counter() - started
    print(
        json.dumps(
            {
                "wall_s": wall,
                "warm_wall_s": warm,
                "import_s": import_s,
                "peak_rss_mib": peak / 1024,
                "rss_before_job_mib": rss_before / 1024,
                "n_rows": summary["n_rows"],
                "drift_share": summary["drift"]["drift_share"],
                "dataset_drift": summary["drift"]["dataset_drift"],
                "verdicts": {k: v["drifted"] for k, v in summary["drift"]["features"].items()},
                "excluded": summary["drift"]["excluded_features"],
            }
        )
    )


def _run_child(log_root: Path, profile_path: Path, out_dir: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(log_root), str(profile_path), str(out_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"drift job child failed:\n{proc.stderr[-3000:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="logged rows for the drift job")
    parser.add_argument("--evidently-rows", type=int, default=100_000, help="rows for the Evidently comparison")
    parser.add_argument("--reference-rows", type=int, default=100_000, help="training rows behind the profile")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    import pandas as pd

    from fraudops import schema
    from fraudops.data.generate import generate_transactions
    from fraudops.monitoring import predlog
    from fraudops.monitoring.binning import evidently_psi
    from fraudops.monitoring.profile import build_reference_profile, save_profile
    from fraudops.monitoring.simulate import DEFAULT_CARDS, feature_matrix, fit_stand_in_scorer, simulate_day

    features = list(schema.FEATURE_NAMES)
    print(
        f"drift benchmark: {args.rows:,} logged rows x {len(features)} features; Evidently at {args.evidently_rows:,}"
    )
    print(f"machine: {os.cpu_count()} cores, numpy {np.__version__}")

    t = time.perf_counter()
    train = generate_transactions(args.reference_rows, seed=args.seed, n_cards=DEFAULT_CARDS)
    scorer = fit_stand_in_scorer(train.slice(0, 20_000))
    X_ref = feature_matrix(train)
    started = time.perf_counter()
    profile = build_reference_profile(X_ref, features, scorer(X_ref), train.column(schema.LABEL).to_numpy())
    profile_s = time.perf_counter() - started
    setup_s = time.perf_counter() - t
    print(f"reference: {args.reference_rows:,} rows; profile built in {profile_s:.2f} s (setup {setup_s:.1f} s)")

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        root = Path(tmp)
        profile_path = save_profile(profile, root / "reference_profile.json")
        t = time.perf_counter()
        records, _ = simulate_day(DAY, args.rows, scorer, scenario="new_market", seed=args.seed, model_version="1")
        big_log = root / "log-big"
        predlog.write_log_batch(records, big_log)
        small = records.slice(0, args.evidently_rows)
        small_log = root / "log-small"
        predlog.write_log_batch(small, small_log)
        print(f"logged traffic written in {time.perf_counter() - t:.1f} s")

        # 1. Our job at full size, in a fresh process (so peak memory is the job's own).
        big = _run_child(big_log, profile_path, root / "out-big")
        print(
            f"\n[ours] drift job, {big['n_rows']:,} rows: {big['wall_s']:.2f} s wall, first run in a fresh process "
            f"(+ {big['import_s']:.1f} s import; {big['warm_wall_s']:.2f} s on a second run), "
            f"peak RSS {big['peak_rss_mib']:.0f} MiB (of which {big['rss_before_job_mib']:.0f} MiB before the job: "
            "interpreter, NumPy, PyArrow, profile)"
        )
        print(
            f"       targets: < 10 s -> {'OK' if big['wall_s'] < 10 else 'MISSED'}; "
            f"< 4096 MiB -> {'OK' if big['peak_rss_mib'] < 4096 else 'MISSED'}"
        )
        print(f"       drift share {big['drift_share']:.3f}, dataset drift {big['dataset_drift']}")

        # 2. Same rows for both at the comparison size.
        ours_small = _run_child(small_log, profile_path, root / "out-small")
        cur_df = pd.DataFrame(feature_matrix(small), columns=features)
        ref_df = pd.DataFrame(X_ref, columns=features)
        t = time.perf_counter()
        replica = {f: evidently_psi(ref_df[f].to_numpy(), cur_df[f].to_numpy()) for f in features}
        replica_s = time.perf_counter() - t

        t = time.perf_counter()
        import evidently  # noqa: F401  (import time reported apart from the run)

        from fraudops.monitoring.report import evidently_drift

        import_s = time.perf_counter() - t
        ev = evidently_drift(ref_df, cur_df, features, psi_threshold=0.2, drift_share=0.3)

    ratio = ev.seconds / float(ours_small["wall_s"])  # type: ignore[arg-type]
    warm_ratio = ev.seconds / float(ours_small["warm_wall_s"])  # type: ignore[arg-type]
    print(
        f"\n[ours]      drift job, {args.evidently_rows:,} rows: {ours_small['wall_s']:.2f} s wall, first run in a "
        f"fresh process (+ {ours_small['import_s']:.1f} s import), {ours_small['warm_wall_s']:.2f} s on a second run"
    )
    print(
        f"[evidently] DataDriftPreset(method='psi'), {args.evidently_rows:,} current x "
        f"{args.reference_rows:,} reference rows: {ev.seconds:.2f} s (+ {import_s:.1f} s import)"
    )
    print(
        f"ratio: ours is {ratio:.1f}x faster than Evidently, both first runs, imports apart (target >= 20x) -> "
        f"{'OK' if ratio >= 20 else 'MISSED'}; {warm_ratio:.1f}x on the second run"
    )
    print(
        f"[replica]   Evidently's binning, vectorized, same rows: {replica_s:.2f} s "
        f"({ev.seconds / replica_s:.1f}x faster than Evidently)"
    )

    ev_verdicts = ev.drifted
    rep_verdicts = {f: v >= 0.2 for f, v in replica.items()}
    max_diff = max(abs(replica[f] - ev.psi[f]) for f in features)
    same_replica = sum(rep_verdicts[f] == ev_verdicts[f] for f in features)
    job_verdicts: dict[str, bool] = ours_small["verdicts"]  # type: ignore[assignment]
    excluded: list[str] = ours_small["excluded"]  # type: ignore[assignment]
    counted = [f for f in features if f not in excluded]
    same_job = sum(job_verdicts[f] == ev_verdicts[f] for f in counted)
    ev_share_counted = sum(ev_verdicts[f] for f in counted) / len(counted)
    print("\nverdicts (PSI >= 0.2 per feature; dataset drift: share above 0.3)")
    print(
        f"  replica vs Evidently: {same_replica}/{len(features)} features agree, max |PSI diff| {max_diff:.2e}; "
        f"dataset drift {sum(rep_verdicts.values()) / len(features) >= 0.3} vs {ev.dataset_drift}"
    )
    print(
        f"  drift job (profile bins) vs Evidently: {same_job}/{len(counted)} counted features agree; "
        f"drift share {ours_small['drift_share']:.3f} vs {ev_share_counted:.3f}; "
        f"dataset drift {ours_small['dataset_drift']} vs {ev.dataset_drift}"
    )
    differ = sorted(f for f in counted if job_verdicts[f] != ev_verdicts[f])
    if differ:
        print(f"  differing (equal-width vs quantile bins): {', '.join(differ)}")
    print(f"  ({', '.join(excluded)} are measured but not counted by the daily job: a day has one weekday)")


if __name__ == "__main__":
    main()
