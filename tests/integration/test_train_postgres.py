"""Training and export against MLflow with a real PostgreSQL backend store, as in production.

A throwaway database is created on the local server (127.0.0.1:5432, user postgres) and
dropped afterwards. Artifacts go to a local directory (S3 in production: same client
calls, another artifact root).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fraudops.data.generate import generate_transactions

pytestmark = pytest.mark.slow

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg2

    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({exc}). Start it, e.g. "
            "`pg_ctlcluster 15 main start` or `service postgresql start`, with trust auth for local connections."
        )
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_tracking_uri() -> Iterator[str]:
    """A fresh database for the MLflow store, dropped (connections and all) after the test."""
    name = f"fraudops_mlflow_{uuid.uuid4().hex[:12]}"
    conn = _admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def test_train_and_export_with_a_postgres_store(
    pg_tracking_uri: str, fraudops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraudops.cli.main import app
    from fraudops.export.bundle import load_bundle
    from fraudops.settings import get_settings
    from fraudops.training import tracking

    artifacts = tmp_path / "artifact-store"
    monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", pg_tracking_uri)
    monkeypatch.setenv("FRAUDOPS_MLFLOW_ARTIFACT_ROOT", artifacts.as_uri())
    monkeypatch.setenv("FRAUDOPS_MODEL_NAME", "fraud-detector-pg")
    monkeypatch.setenv("FRAUDOPS_TRAIN_EPOCHS", "2")  # configuration from the environment
    get_settings.cache_clear()
    data = tmp_path / "train.parquet"
    pq.write_table(generate_transactions(40_000, seed=5), data)

    runner = CliRunner()
    res = runner.invoke(
        app,
        ["train", "--data", str(data), "--experiment", "pg-test", "--summary", str(tmp_path / "t.json")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    train = json.loads((tmp_path / "t.json").read_text())
    assert train["tracking_uri"] == pg_tracking_uri
    assert train["model_name"] == "fraud-detector-pg" and train["model_version"] == "1"
    assert train["epochs_run"] <= 2

    res = runner.invoke(app, ["export", "--summary", str(tmp_path / "e.json")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    export = json.loads((tmp_path / "e.json").read_text())
    assert export["parity_max_abs_diff"] <= 1e-5

    # Everything is in PostgreSQL and the artifact root, read back through a new client.
    client = tracking.configure(get_settings())
    exp = client.get_experiment_by_name("pg-test")
    assert exp is not None and exp.artifact_location == artifacts.as_uri()
    run = client.get_run(train["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_auc_roc"] == pytest.approx(train["metrics"]["test_auc_roc"])
    assert "parity_max_abs_diff" in run.data.metrics
    assert len(client.get_metric_history(train["run_id"], "val_auc_roc")) == train["epochs_run"]
    mv = client.get_model_version("fraud-detector-pg", "1")
    assert mv.tags["run_id"] == train["run_id"] and mv.tags["parity_passed"] == "true"
    assert any(artifacts.rglob("model.onnx")) and any(artifacts.rglob("test_split.npz"))

    import psycopg2

    conn = psycopg2.connect(pg_tracking_uri)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name, version FROM model_versions")
            assert cur.fetchall() == [("fraud-detector-pg", 1)]
    finally:
        conn.close()

    bundle = load_bundle(Path(export["bundle_path"]))
    assert bundle.manifest.model_name == "fraud-detector-pg"
    assert Path(export["bundle_path"]).is_relative_to(fraudops_home)
