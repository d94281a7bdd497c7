"""Run a DAG with ``airflow dags test`` and read what happened from the metadata database.

``airflow dags test`` runs one DAG run in a single process, task after task, against the
real metadata database: the same run records, task states and XComs as under the
scheduler, without the scheduler. It is how ``fraudops airflow demo`` and the end-to-end
tests run the DAGs on the embedded default.

The results are read back from the embedded SQLite database with :mod:`sqlite3` (Airflow's
own tables ``dag_run``, ``task_instance`` and ``xcom``), which takes milliseconds where
importing Airflow's ORM takes seconds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudops.orchestration.bootstrap import EmbeddedAirflow, run_airflow


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One task instance of a run."""

    task_id: str
    state: str | None
    try_number: int
    duration_s: float | None
    start: str | None
    end: str | None


@dataclass(slots=True)
class DagRunResult:
    """One DAG run: its state, its tasks, and the values the tasks returned."""

    dag_id: str
    run_id: str
    state: str
    logical_date: str | None
    conf: dict[str, Any]
    tasks: dict[str, TaskResult]
    returns: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None  # of the `airflow dags test` process, when it ran one
    log_file: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    def states(self) -> dict[str, str | None]:
        return {t: r.state for t, r in self.tasks.items()}

    def task_seconds(self) -> float:
        """Sum of the task durations."""
        return sum(r.duration_s or 0.0 for r in self.tasks.values())

    def failed_tasks(self) -> list[str]:
        return [t for t, r in self.tasks.items() if r.state in ("failed", "upstream_failed")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "state": self.state,
            "logical_date": self.logical_date,
            "conf": self.conf,
            "tasks": self.states(),
            "task_seconds": round(self.task_seconds(), 2),
            "wall_s": None if self.wall_s is None else round(self.wall_s, 2),
            "log_file": self.log_file,
        }


def _json(value: Any) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def read_run(db_path: Path, dag_id: str, run_id: str | None = None) -> DagRunResult:
    """A run of ``dag_id`` from the metadata database (the newest one when ``run_id`` is None)."""
    if not db_path.is_file():
        raise FileNotFoundError(f"no Airflow metadata database at {db_path}: run `fraudops airflow init`")
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        con.row_factory = sqlite3.Row
        if run_id is None:
            row = con.execute("SELECT * FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        else:
            row = con.execute("SELECT * FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).fetchone()
        if row is None:
            raise LookupError(f"no run of {dag_id!r}" + (f" with id {run_id!r}" if run_id else "") + f" in {db_path}")
        tasks = {
            r["task_id"]: TaskResult(
                task_id=r["task_id"],
                state=r["state"],
                try_number=int(r["try_number"] or 0),
                duration_s=None if r["duration"] is None else float(r["duration"]),
                start=r["start_date"],
                end=r["end_date"],
            )
            for r in con.execute(
                "SELECT task_id, state, try_number, duration, start_date, end_date FROM task_instance "
                "WHERE dag_id = ? AND run_id = ? AND map_index = -1 ORDER BY start_date",
                (dag_id, row["run_id"]),
            )
        }
        returns = {
            r["task_id"]: _json(r["value"])
            for r in con.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value' "
                "AND map_index = -1",
                (dag_id, row["run_id"]),
            )
        }
    finally:
        con.close()
    conf = _json(row["conf"]) or {}
    return DagRunResult(
        dag_id=dag_id,
        run_id=row["run_id"],
        state=row["state"],
        logical_date=row["logical_date"],
        conf=conf if isinstance(conf, dict) else {},
        tasks=tasks,
        returns=returns,
    )


def dag_file(airflow: EmbeddedAirflow, dag_id: str) -> Path:
    """The file of ``dag_id`` (one DAG per file, named after it)."""
    path = airflow.dags_folder / f"{dag_id}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no DAG file {path}")
    return path


def run_dag_test(
    airflow: EmbeddedAirflow,
    dag_id: str,
    logical_date: datetime,
    *,
    conf: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> DagRunResult:
    """Run ``airflow dags test`` for one run and return what the metadata database says of it.

    A failed run is returned, not raised (``result.state == "failed"``); the full output is
    in ``result.log_file``. Re-running the same logical date replaces the earlier run.
    """
    if logical_date.tzinfo is None:
        raise ValueError("logical_date must be timezone-aware")
    stamp = logical_date.strftime("%Y%m%dT%H%M%S")
    log_file = airflow.home / "logs" / "dags-test" / f"{dag_id}__{stamp}__{int(time.time())}.log"
    args = ["dags", "test", dag_id, logical_date.isoformat(), "--dagfile-path", str(dag_file(airflow, dag_id))]
    if conf:
        args += ["--conf", json.dumps(dict(conf))]
    t0 = time.perf_counter()
    proc = run_airflow(airflow, *args, log_file=log_file, timeout=timeout)
    wall = time.perf_counter() - t0
    try:
        result = read_run(airflow.db_path, dag_id)
    except LookupError:
        tail = log_file.read_text(errors="replace")[-3000:] if log_file.is_file() else ""
        raise RuntimeError(
            f"`airflow dags test {dag_id}` created no run (exit {proc.returncode}); log {log_file}:\n{tail}"
        ) from None
    result.wall_s = wall
    result.log_file = str(log_file)
    return result


def queued_runs(db_path: Path, dag_id: str) -> list[DagRunResult]:
    """The runs of ``dag_id`` waiting in the queue (created by a trigger, not started yet)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? AND state = 'queued' ORDER BY id", (dag_id,)
            )
        ]
    finally:
        con.close()
    return [read_run(db_path, dag_id, run_id) for run_id in ids]


def run_queued(airflow: EmbeddedAirflow, queued: DagRunResult, *, timeout: float | None = None) -> DagRunResult:
    """Execute a queued run (one that another DAG triggered) with ``airflow dags test``.

    On the embedded default no scheduler runs during the demo; ``airflow dags test`` with
    the queued run's logical date and configuration replaces it by an executed run (the
    same logical date, the same ``conf``), which is what the scheduler would have run.
    """
    if not queued.logical_date:
        raise ValueError(f"run {queued.run_id} of {queued.dag_id} has no logical date to run it again by")
    logical = datetime.fromisoformat(queued.logical_date)
    if logical.tzinfo is None:  # SQLite keeps UTC without the offset
        logical = logical.replace(tzinfo=UTC)
    return run_dag_test(airflow, queued.dag_id, logical, conf=queued.conf, timeout=timeout)
