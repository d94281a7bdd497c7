"""The DAGs end to end on the embedded default, run by Airflow itself (`airflow dags test`).

Real everything: DuckDB warehouse, Great Expectations, DVC, Feast (DuckDB offline, SQLite
online), `fraudops train` as a child process of the task (the local runtime), MLflow
tracking and registry on SQLite, ONNX export. Small data (30k rows, 2 epochs) keeps each
DAG run within a minute or two on two cores.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.dags.support import embedded_for_test, migrate

pytestmark = pytest.mark.slow

ROWS, DAYS = 30_000, 14
AS_OF = datetime.fromisoformat("2026-09-15T00:00:00+00:00")  # the end of the generated data
TRAINING_CONF = {"reason": "e2e test", "epochs": 2, "lookback_days": DAYS}
DOWNSTREAM_OF_VALIDATE = (
    "snapshot",
    "training_set",
    "train",
    "evaluate",
    "gate",
    "promotion_path",
    "export_bundle",
    "gate_rejected",
    "register",
    "announce_challenger",
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Airflow metadata database, copied into each test's Airflow home."""
    return migrate(tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture
def airflow(fraudops_home: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from fraudops.orchestration.policy import RETRIES_CAP_ENV

    monkeypatch.setenv(RETRIES_CAP_ENV, "0")  # a failing task fails now: no retry delays in a test
    monkeypatch.delenv("FRAUDOPS_TRAINING_RUNTIME", raising=False)
    return embedded_for_test(template)


def _generate(rows: int = ROWS, *, append: bool = False) -> None:
    from fraudops import pipeline

    pipeline.generate(rows=rows, days=DAYS, append=append)


def _aliases() -> dict[str, str]:
    from fraudops.registry import current_aliases

    return current_aliases()


def _versions() -> list[str]:
    from fraudops.registry import describe

    return sorted(v["version"] for v in describe()["versions"])


def _online_rows(home: Path) -> list[tuple[Any, ...]]:
    """Every row of every table of the SQLite online store, keys and timestamps included."""
    con = sqlite3.connect(home / "feature_repo" / "online_store.db")
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows: list[tuple[Any, ...]] = []
        for table in tables:
            rows += [(table, *r) for r in con.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2, 3')]
    finally:
        con.close()
    return rows


def _explain(result: Any) -> str:
    tail = Path(result.log_file).read_text(errors="replace")[-4000:] if result.log_file else ""
    return f"{result.dag_id} {result.state}: {result.states()}\n{tail}"


def test_materializing_an_interval_again_changes_nothing(airflow: Any, fraudops_home: Path) -> None:
    from fraudops.orchestration.runs import run_dag_test

    _generate()
    first = run_dag_test(airflow, "fraud_feature_materialization", AS_OF)
    assert first.succeeded, _explain(first)
    loaded = first.returns["materialize"]
    # The hourly run loads exactly its interval: the hour before AS_OF.
    assert loaded["end"] == AS_OF.isoformat() and loaded["start"] == "2026-09-14T23:00:00+00:00"
    assert loaded["rows"] and loaded["rows"] > 0
    before = _online_rows(fraudops_home)
    assert before, "the online store is empty after materializing an interval with data"

    again = run_dag_test(airflow, "fraud_feature_materialization", AS_OF)
    assert again.succeeded, _explain(again)
    assert again.returns["materialize"]["rows"] == loaded["rows"]
    assert _online_rows(fraudops_home) == before


def test_a_training_run_registers_a_version_and_a_bundle_and_a_rejected_one_moves_no_alias(
    airflow: Any, fraudops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraudops.orchestration.runs import run_dag_test
    from fraudops.settings import get_settings
    from tests.dags.support import read_xcom

    _generate()
    # The floor is lowered so that a 2-epoch model on 30k rows passes; the second run raises it.
    monkeypatch.setenv("FRAUDOPS_GATE__AUC_FLOOR", "0.5")
    get_settings.cache_clear()
    run = run_dag_test(airflow, "fraud_training", AS_OF, conf=TRAINING_CONF)
    assert run.succeeded, _explain(run)
    states = run.states()
    assert states["gate_rejected"] == "skipped"
    assert all(states[t] == "success" for t in ("validate", "train", "gate", "export_bundle", "register"))

    data_version = run.returns["snapshot"]["version"]
    evaluation = run.returns["evaluate"]
    assert evaluation["model_version"] == "1" and evaluation["data_version"] == data_version
    assert _versions() == ["1"]
    assert _aliases() == {"champion": "1"}  # the first model: champion directly
    bundle = Path(run.returns["export_bundle"]["bundle_path"])
    assert (bundle / "model.onnx").is_file() and (bundle / "manifest.json").is_file()
    from fraudops.export.bundle import load_bundle

    manifest = load_bundle(bundle).manifest
    assert (manifest.model_version, manifest.data_version) == ("1", data_version)
    event = run.returns["announce_challenger"]
    assert (event["model_version"], event["alias"]) == ("1", "champion")
    # The training task's "MLflow run" button: computed by the worker, kept as an XCom.
    link = read_xcom(airflow.db_path, "fraud_training", "train", "_link_MLflowRunLink")
    assert link and link.endswith(f"/runs/{evaluation['run_id']}")

    # A model below the floor: the run still succeeds, says why, and moves no alias.
    monkeypatch.setenv("FRAUDOPS_GATE__AUC_FLOOR", "0.9999")
    get_settings.cache_clear()
    rejected = run_dag_test(airflow, "fraud_training", AS_OF, conf={**TRAINING_CONF, "reason": "gate test"})
    assert rejected.succeeded, _explain(rejected)
    states = rejected.states()
    assert states["gate_rejected"] == "success"
    assert all(states[t] == "skipped" for t in ("export_bundle", "register", "announce_challenger"))
    outcome = rejected.returns["gate_rejected"]
    assert outcome["promoted"] is False and "floor" in outcome["reason"]
    assert outcome["model_version"] == "2"
    assert _versions() == ["1", "2"]
    assert _aliases() == {"champion": "1"}
    assert not (bundle.parent / "2").exists(), "a rejected version got a bundle"
    from fraudops.registry import alias_history

    assert [(e.alias, e.to_version) for e in alias_history()] == [("champion", "1")]


def test_corrupted_data_fails_at_validation_and_never_trains(airflow: Any, fraudops_home: Path) -> None:
    from fraudops.orchestration.runs import run_dag_test

    _generate()
    _generate(2_000, append=True)  # the same seed again: 2,000 duplicate transaction ids
    run = run_dag_test(airflow, "fraud_training", AS_OF, conf=TRAINING_CONF)
    assert run.state == "failed", _explain(run)
    validate = run.tasks["validate"]
    assert validate.state == "failed" and validate.try_number == 1, "a failed gate is not retried"
    assert {t: run.tasks[t].state for t in DOWNSTREAM_OF_VALIDATE} == dict.fromkeys(
        DOWNSTREAM_OF_VALIDATE, "upstream_failed"
    )
    log = Path(run.log_file or "").read_text(errors="replace")
    assert "data validation failed" in log and "transaction_id" in log
    # Nothing downstream ran: no snapshot, no MLflow database, no registered model.
    assert not (fraudops_home / "snapshots" / "versions").exists() or not any(
        (fraudops_home / "snapshots" / "versions").iterdir()
    )
    assert not (fraudops_home / "mlflow.db").exists()
    assert not (fraudops_home / "bundles").exists()
