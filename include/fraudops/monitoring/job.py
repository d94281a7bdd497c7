"""The daily drift job: one UTC day of champion traffic against the champion's profile.

``run_drift_job(day)`` reads the day's prediction log, computes feature drift (PSI per
feature), prediction drift (the score distribution), and, where labels have arrived,
target drift and classification quality by day; writes the results under
``settings.monitoring_dir/<YYYY-MM-DD>/``:

* ``summary.json``: every figure and verdict (the machine-readable result);
* ``report.html``: the Evidently report (on a sample when the day is large);
* ``metrics.prom``: the gauges for Prometheus;

then, only once the results are on disk, sends the alert and pushes the metrics, and
records how that went in the summary. Re-running a day rewrites that day's directory
and nothing else (the new directory is built aside and swapped in).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fraudops import schema
from fraudops.monitoring import predlog
from fraudops.monitoring.drift import DriftThresholds, compute_drift
from fraudops.monitoring.profile import PROFILE_FILENAME, Profile, ProfileError, load_profile
from fraudops.monitoring.quality import (
    classification_quality,
    decision_rate,
    join_labels,
    mature_day_labels,
    quality_by_day,
    read_labels,
    score_shift,
    target_drift,
)
from fraudops.monitoring.report import DEFAULT_REPORT_ROWS

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops.settings import Settings

log = logging.getLogger(__name__)

SUMMARY_FORMAT_VERSION = 1
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
METRICS_FILE = "metrics.prom"
# A day's batch holds a single weekday by construction: these always "drift" against a
# reference that spans weeks. They are measured and reported, not counted in the share.
DAILY_EXCLUDED_FEATURES: tuple[str, ...] = ("day_of_week", "is_weekend")
# Quality needs some fraud among the labelled rows before an AUC means anything.
MIN_POSITIVES_FOR_QUALITY_ALERT = 20


class DriftJobError(RuntimeError):
    """The drift job cannot run (no profile for the champion, unreadable log)."""


def day_interval(day: date) -> tuple[datetime, datetime]:
    """``[00:00, 24:00)`` UTC of ``day``."""
    start = datetime.combine(day, dtime(0, 0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def day_dir(monitoring_dir: Path, day: date) -> Path:
    """Where a day's results live."""
    return monitoring_dir / day.isoformat()


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str) + b"\n"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (both directories on the same filesystem)."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def read_summary(monitoring_dir: Path, day: date) -> dict[str, Any]:
    """A day's ``summary.json``."""
    path = day_dir(monitoring_dir, day) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no drift results for {day.isoformat()} under {monitoring_dir}")
    result: dict[str, Any] = orjson.loads(path.read_bytes())
    return result


def champion_profile_path(settings: Settings, model_version: str) -> Path:
    """Where the bundle of a model version keeps its reference profile."""
    return settings.bundles_dir / settings.model_name / model_version / PROFILE_FILENAME


def _main_version(table: pa.Table) -> tuple[str | None, str | None, dict[str, int]]:
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return None, None, {}
    counts = {
        str(r["values"]): int(r["counts"]) for r in pc.value_counts(table.column(predlog.MODEL_VERSION)).to_pylist()
    }
    version = max(counts, key=lambda v: counts[v])
    names = pc.unique(table.column(predlog.MODEL_NAME)).to_pylist()
    return (str(names[0]) if names else None), version, counts


def _given_profile(profile: Profile | str | Path | None) -> tuple[Profile | None, str | None]:
    if profile is None:
        return None, None
    if isinstance(profile, dict):
        return profile, "given"
    try:
        return load_profile(profile), str(profile)
    except ProfileError as exc:
        raise DriftJobError(str(exc)) from exc


def _champion_profile(settings: Settings, version: str) -> tuple[Profile, str]:
    path = champion_profile_path(settings, version)
    try:
        return load_profile(path), str(path)
    except ProfileError as exc:
        raise DriftJobError(
            f"no usable reference profile for the champion (version {version}): {exc}; "
            "pass one explicitly (--profile) or export the model bundle first"
        ) from exc


def run_drift_job(
    day: date,
    *,
    settings: Settings | None = None,
    profile: Profile | str | Path | None = None,
    log_root: str | Path | None = None,
    labels: pa.Table | str | Path | None = None,
    monitoring_dir: Path | None = None,
    report: bool = True,
    report_rows: int = DEFAULT_REPORT_ROWS,
    exclude: Sequence[str] = DAILY_EXCLUDED_FEATURES,
    quality_lookback_days: int = 14,
    min_label_coverage: float = 0.5,
    webhook_url: str | None = None,
    report_url: str | None = None,
    pushgateway_url: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run the drift job for one UTC day; returns the summary (also in ``summary.json``).

    ``profile`` is a profile dict or path; None reads the bundle of the version that
    served most of the day's champion traffic. ``labels`` (table or Parquet path) are
    optional; only labels known at the end of the day count. Quality is computed by day
    over ``quality_lookback_days``; target drift (the fraud rate against the profile's
    label rate) on the latest day with at least ``min_label_coverage`` of its labels in. ``webhook_url`` gets the
    Slack alert when the drift share passes the alert level or quality falls below the
    promotion floor; ``report_url`` is the link put in the alert (default: the report's
    file URL). ``now`` only stamps ``generated_at``.
    """
    from fraudops.settings import get_settings

    cfg = settings or get_settings()
    started = time.perf_counter()
    start, end = day_interval(day)
    out_root = monitoring_dir or cfg.monitoring_dir
    root = log_root or cfg.prediction_log_root
    th = DriftThresholds.from_settings(cfg.drift)

    prof, profile_source = _given_profile(profile)
    meta = [predlog.TS, predlog.MODEL_NAME, predlog.MODEL_VERSION, predlog.PROBABILITY, predlog.DECISION]
    meta.append(schema.TRANSACTION_ID)
    try:
        if prof is None:
            # The log says which version served: its bundle holds the profile.
            served = predlog.read_prediction_log(
                root, start, end, variants=("champion",), columns=[predlog.MODEL_NAME, predlog.MODEL_VERSION]
            )
            _, served_version, _ = _main_version(served)
            if served_version is not None:
                prof, profile_source = _champion_profile(cfg, served_version)
        features = list(prof["features"]) if prof else []
        table = predlog.read_prediction_log(root, start, end, variants=("champion",), columns=meta + features)
    except predlog.PredictionLogError as exc:
        raise DriftJobError(str(exc)) from exc
    model_name, version, versions = _main_version(table)
    summary: dict[str, Any] = {
        "format_version": SUMMARY_FORMAT_VERSION,
        "date": day.isoformat(),
        "interval": {"start": start.isoformat(), "end": end.isoformat()},
        "generated_at": (now or datetime.now(UTC)).isoformat(),
        "variant": "champion",
        "model_name": model_name or cfg.model_name,
        "model_version": version,
        "model_versions": versions,
        "n_rows": table.num_rows,
    }
    target = day_dir(out_root, day)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{day.isoformat()}.tmp-", dir=out_root))
    staging.chmod(0o755)  # mkdtemp makes it private; the results are for operators to read
    try:
        if table.num_rows == 0:
            log.warning("no champion traffic logged on %s under %s", day.isoformat(), root)
            summary.update(status="no_data", drift=None, prediction=None, target=None, quality=None)
            summary["alert_reasons"] = []
        else:
            if prof is None:  # cannot happen: traffic means a served version was found
                raise DriftJobError("traffic without a model version: cannot choose a reference profile")
            summary["profile"] = {
                "source": profile_source,
                "n_rows": prof.get("n_rows"),
                "created_at": prof.get("created_at"),
                "feature_schema_version": prof.get("feature_schema_version"),
            }
            summary.update(
                _analyse(
                    table,
                    prof,
                    th,
                    exclude,
                    version,
                    cfg,
                    root,
                    labels,
                    start,
                    end,
                    quality_lookback_days,
                    min_label_coverage,
                )
            )
            summary["status"] = "ok"
            if report:
                summary["report"] = _report(table, prof, staging / REPORT_FILE, report_rows, th)
        from fraudops.monitoring.metrics import drift_metrics_text

        (staging / METRICS_FILE).write_text(drift_metrics_text(summary))
        summary["summary_path"] = str(target / SUMMARY_FILE)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        (staging / SUMMARY_FILE).write_bytes(_json_bytes(summary))
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "drift %s: %s rows, share %s, dataset drift %s",
        day.isoformat(),
        summary["n_rows"],
        (summary.get("drift") or {}).get("drift_share"),
        (summary.get("drift") or {}).get("dataset_drift"),
    )

    # Side effects last: the results are already on disk whatever happens here.
    changed = False
    if summary.get("alert_reasons") and webhook_url:
        link = report_url or ((target / REPORT_FILE).as_uri() if (target / REPORT_FILE).exists() else None)
        summary["alert"] = send_drift_alert(summary, webhook_url, report_url=link)
        changed = True
    if pushgateway_url:
        from fraudops.monitoring.metrics import push_drift_metrics

        summary["metrics_push"] = push_drift_metrics(pushgateway_url, summary).to_dict()
        changed = True
    if changed:
        _write_atomic(target / SUMMARY_FILE, _json_bytes(summary))
    return summary


def send_drift_alert(summary: dict[str, Any], webhook_url: str, *, report_url: str | None = None) -> dict[str, Any]:
    """Send the Slack alert of a summary; returns the delivery record (never raises)."""
    from fraudops.monitoring.alerts import drift_alert_payload, send_slack

    result = send_slack(webhook_url, drift_alert_payload(summary, report_url=report_url)).to_dict()
    result["report_url"] = report_url
    return result


def _analyse(
    table: pa.Table,
    prof: Profile,
    th: DriftThresholds,
    exclude: Sequence[str],
    version: str | None,
    cfg: Settings,
    root: str | Path,
    labels: pa.Table | str | Path | None,
    start: datetime,
    end: datetime,
    lookback_days: int,
    min_label_coverage: float,
) -> dict[str, Any]:
    import pyarrow.compute as pc

    excluded = [f for f in exclude if f in prof["features"]]
    drift = compute_drift(table, prof, th, score_column=None, exclude=excluded)
    out: dict[str, Any] = {"drift": drift.to_dict()}

    # Prediction drift on the rows of the version the profile belongs to (filtering two
    # columns, not the whole table: a million rows by 128 features is half a gigabyte).
    from fraudops.monitoring.drift import column_drift

    scores_col, decisions_col = table.column(predlog.PROBABILITY), table.column(predlog.DECISION)
    if version is not None:
        mask = pc.equal(table.column(predlog.MODEL_VERSION), version)
        scores_col, decisions_col = pc.filter(scores_col, mask), pc.filter(decisions_col, mask)
    scores = scores_col.to_numpy()
    score = column_drift("score", scores, prof, th.psi)
    out["prediction"] = {
        "psi": score.psi,
        "drifted": score.drifted,
        "n": score.n,
        **score_shift(scores, float(prof["score"]["mean"]), float(prof["score"]["std"])),
        "decision_rate": decision_rate(decisions_col.to_numpy()),
    }

    reasons: list[str] = []
    if drift.alert:
        reasons.append(f"drift share {drift.drift_share:.0%} above the alert level {th.alert_share:.0%}")
    out["target"], out["quality"] = None, None
    if labels is not None:
        known = read_labels(labels, as_of=end)
        window = predlog.read_prediction_log(
            root,
            end - timedelta(days=lookback_days),
            end,
            variants=("champion",),
            columns=[predlog.TS, schema.TRANSACTION_ID, predlog.PROBABILITY, predlog.DECISION],
        )
        labelled = join_labels(window, known)
        overall = (
            classification_quality(
                labelled.column(schema.LABEL).to_numpy(),
                labelled.column(predlog.PROBABILITY).to_numpy(),
                labelled.column(predlog.DECISION).to_numpy(),
            )
            if labelled.num_rows
            else None
        )
        by_day = quality_by_day(labelled, window)
        out["quality"] = {
            "lookback_days": lookback_days,
            "labels_as_of": end.isoformat(),
            "overall": overall,
            "by_day": by_day,
            "auc_floor": cfg.gate.auc_floor,
        }
        # Target drift on the latest day whose labels are mostly in (see mature_day_labels).
        mature_day, mature_labels = mature_day_labels(labelled, by_day, min_label_coverage)
        this_day = next((d for d in by_day if d["date"] == start.date().isoformat()), None)
        out["target"] = {
            "date": mature_day,
            "min_label_coverage": min_label_coverage,
            "label_coverage": next((d["label_coverage"] for d in by_day if d["date"] == mature_day), None),
            "day_label_coverage": this_day["label_coverage"] if this_day else 0.0,
            **target_drift(mature_labels, prof.get("label_rate")),
        }
        if (
            overall is not None
            and overall["auc_roc"] is not None
            and overall["n_positive"] >= MIN_POSITIVES_FOR_QUALITY_ALERT
            and overall["auc_roc"] < cfg.gate.auc_floor
        ):
            reasons.append(
                f"AUC-ROC {overall['auc_roc']:.3f} on {overall['n']:,} labelled rows "
                f"below the floor {cfg.gate.auc_floor}"
            )
    out["alert_reasons"] = reasons
    out["retrain_recommended"] = drift.dataset_drift
    return out


def _report(table: pa.Table, prof: Profile, path: Path, rows: int, th: DriftThresholds) -> dict[str, Any]:
    from fraudops.monitoring.report import write_drift_report

    try:
        return write_drift_report(table, prof, path, rows=rows, psi_threshold=th.psi, drift_share=th.dataset_share)
    except Exception as exc:  # the report is for reading: its failure must not lose the figures
        log.exception("Evidently report failed")
        return {"path": None, "error": f"{type(exc).__name__}: {exc}"}
