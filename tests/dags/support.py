"""Helpers for the DAG and Airflow end-to-end tests: an isolated Airflow per test.

Airflow reads its configuration once per process, so every test that runs Airflow does it
in a child process with its own ``AIRFLOW_HOME``. Migrating a metadata database takes
~15 s here; :func:`migrated_template` does it once per session and each test copies the
file (:func:`isolated_airflow`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
PLUGINS = ROOT / "plugins"
PROBE = Path(__file__).with_name("probe_parse.py")
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")


def base_env(home: Path, dags_folder: Path = DAGS, **extra: str) -> dict[str, str]:
    """The environment of an Airflow child process with its own home and SQLite database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "FRAUDOPS_TRAINING_RUNTIME": "local",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def migrate(home: Path) -> Path:
    """``airflow db migrate`` into ``home``; fails the test with the output when it fails."""
    import pytest

    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(AIRFLOW_BIN), "db", "migrate"], env=base_env(home), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}", pytrace=False)
    return home


def isolated_airflow(template: Path, home: Path) -> Path:
    """A fresh Airflow home with a copy of the migrated template database."""
    home.mkdir(parents=True, exist_ok=True)
    for name in ("airflow.db", "airflow.cfg", ".fraudops-migrated"):
        if (template / name).exists():
            shutil.copy2(template / name, home / name)
    return home


def run_probe(files: list[Path], env: dict[str, str], out: Path, timeout: float = 300) -> dict[str, Any]:
    """Run ``probe_parse.py`` over ``files``; its JSON report."""
    import pytest

    proc = subprocess.run(
        [sys.executable, str(PROBE), str(out), *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        pytest.fail(f"the parse probe failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def read_xcom(db: Path, dag_id: str, task_id: str, key: str) -> Any:
    """An XCom of the newest run of ``dag_id`` (JSON-decoded), or None."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT x.value FROM xcom x JOIN dag_run r ON r.id = x.dag_run_id "
            "WHERE x.dag_id = ? AND x.task_id = ? AND x.key = ? ORDER BY r.id DESC LIMIT 1",
            (dag_id, task_id, key),
        ).fetchone()
    finally:
        con.close()
    return None if row is None or row[0] is None else json.loads(row[0])


def embedded_for_test(template: Path) -> Any:
    """The embedded Airflow of the test's FRAUDOPS_HOME, with a copy of the migrated database.

    Call with ``FRAUDOPS_HOME`` set (the ``fraudops_home`` fixture) and
    ``FRAUDOPS_AIRFLOW_MAX_RETRIES=0``, so that a failing task fails at once.
    """
    from fraudops.orchestration.bootstrap import embedded_airflow, initialize
    from fraudops.settings import get_settings

    cfg = get_settings()
    cfg.ensure_home()
    embedded = embedded_airflow(cfg)
    isolated_airflow(template, embedded.home)
    initialize(embedded)
    return embedded


def dag_runs(db: Path, dag_id: str) -> list[dict[str, Any]]:
    """Every run of ``dag_id`` in the metadata database: id, state, type, conf."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT run_id, state, run_type, conf FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,)
        ).fetchall()
    finally:
        con.close()
    return [{"run_id": r[0], "state": r[1], "run_type": r[2], "conf": json.loads(r[3]) if r[3] else {}} for r in rows]
