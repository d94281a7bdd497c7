"""Parse DAG files the way Airflow's DAG processor does, and report what parsing did.

Usage (in the Airflow environment of a test): ``python probe_parse.py OUT.json FILE [FILE ...]``

The parent imports Airflow once; each file is then parsed by ``DagBag`` in a forked child,
as the DAG processor parses each file in its own process. While a file is parsed:

* every SQL statement that reaches any SQLAlchemy engine is counted (Airflow's own
  ``test_should_not_do_database_queries`` counts queries the same way);
* every connection and variable lookup is counted: the real functions are wrapped and
  still called (nothing is patched away, so a lookup that fails still fails);
* the modules imported are compared with those of a reference DAG that uses only
  ``airflow.sdk`` (``@dag``, ``@task``, ``@task.branch``, ``Param``, ``Asset``, timetables).

It also records each DAG's policy facts (owner, tags, retries, catchup, start date,
doc_md against the module docstring) and the parse time. The result is JSON, one entry
per file, for the tests to judge.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REFERENCE_DAG = '''
"""Reference: only airflow.sdk."""
from __future__ import annotations
import datetime as dt
from airflow.sdk import (Asset, CronDataIntervalTimetable, CronTriggerTimetable, Param, dag,
                         get_current_context, task)

A = Asset(name="probe_reference_asset", uri="probe://reference")

@dag(schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
     start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False,
     params={"x": Param(1, type="integer")}, doc_md=__doc__, tags=["t"])
def probe_reference():
    @task
    def a() -> dict:
        return {}
    @task.branch
    def b(v: dict) -> str:
        return "c"
    @task(outlets=[A])
    def c() -> None:
        get_current_context()
    b(a()) >> c()

@dag(schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
     start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False)
def probe_reference_interval():
    @task.sensor(poke_interval=60, timeout=120, mode="reschedule")
    def s() -> bool:
        return True
    s()

probe_reference()
probe_reference_interval()
'''


class Counter:
    """Counts calls of wrapped functions and SQL statements; the calls still happen."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.calls: dict[str, int] = {}

    def wrap_classmethod(self, cls: type, name: str, label: str) -> None:
        raw = cls.__dict__.get(name)
        if not isinstance(raw, classmethod):
            return
        func = raw.__func__

        def spy(klass: type, *args: Any, **kwargs: Any) -> Any:
            self.calls[label] = self.calls.get(label, 0) + 1
            return func(klass, *args, **kwargs)

        setattr(cls, name, classmethod(spy))

    def wrap_function(self, module: Any, name: str, label: str) -> None:
        func = getattr(module, name, None)
        if func is None:
            return

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls[label] = self.calls.get(label, 0) + 1
            return func(*args, **kwargs)

        setattr(module, name, spy)


def install(counter: Counter) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_sql(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        counter.sql.append(statement.strip().split("\n")[0][:200])

    event.listen(Engine, "before_cursor_execute", on_sql)  # every engine, Airflow's included

    from airflow.models.connection import Connection as OrmConnection
    from airflow.models.variable import Variable as OrmVariable
    from airflow.sdk import BaseHook, Connection, Variable
    from airflow.sdk.execution_time import context as sdk_context

    counter.wrap_classmethod(BaseHook, "get_connection", "connection")
    counter.wrap_classmethod(Connection, "get", "connection")
    counter.wrap_classmethod(OrmConnection, "get_connection_from_secrets", "connection")
    counter.wrap_function(sdk_context, "_get_connection", "connection")
    counter.wrap_classmethod(Variable, "get", "variable")
    counter.wrap_classmethod(OrmVariable, "get", "variable")
    counter.wrap_function(sdk_context, "_get_variable", "variable")


def _docstring(path: Path) -> str | None:
    return ast.get_docstring(ast.parse(path.read_text()), clean=False)


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def _policy(dag: Any, path: Path) -> dict[str, Any]:
    start = dag.start_date
    tasks = {}
    for t in dag.tasks:
        tasks[t.task_id] = {
            "owner": t.owner,
            "retries": t.retries,
            "retry_delay_s": t.retry_delay.total_seconds() if t.retry_delay is not None else None,
            "type": type(t).__name__,
            # What a command task runs (the training task in either runtime), unrendered.
            "cmds": getattr(t, "cmds", None),
            "arguments": getattr(t, "arguments", None),
            "training_set": getattr(t, "training_set", None),
            "data_version": getattr(t, "data_version", None),
            "extra_args": getattr(t, "extra_args", None),
            "do_xcom_push": getattr(t, "do_xcom_push", None),
            "on_finish_action": _value(getattr(t, "on_finish_action", None)),
            "on_kill_action": _value(getattr(t, "on_kill_action", None)),
        }
    return {
        "dag_id": dag.dag_id,
        "file_stem": path.stem,
        "owner": dag.owner,
        "tags": sorted(dag.tags),
        "catchup": dag.catchup,
        "start_date": start.isoformat() if start else None,
        "start_date_tz": None if start is None or start.tzinfo is None else str(start.tzinfo),
        "doc_md": dag.doc_md,
        "module_docstring": _docstring(path),
        "timetable": type(dag.timetable).__name__,
        "timetable_description": getattr(dag.timetable, "description", None),
        "params": sorted(dag.params.keys()),
        "tasks": tasks,
        "max_active_runs": dag.max_active_runs,
    }


def _parse(path: Path, counter: Counter) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    before = set(sys.modules)
    counter.sql.clear()
    counter.calls.clear()
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=str(path), safe_mode=False)
    seconds = time.perf_counter() - t0
    return {
        "file": str(path),
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dag_ids": sorted(bag.dag_ids),
        "sql": list(counter.sql),
        "calls": dict(counter.calls),
        "modules": sorted(set(sys.modules) - before),
        "parse_seconds": seconds,
        "dags": [_policy(d, path) for d in bag.dags.values()],
    }


def _in_child(path: Path, counter: Counter) -> dict[str, Any]:
    """Parse ``path`` in a forked child (the DAG processor's way); return its report."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            report = _parse(path, counter)
        except BaseException as exc:  # report, do not hide
            report = {"file": str(path), "crash": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write_fd, "w") as out:
            json.dump(report, out, default=str)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"file": str(path), "crash": "child wrote nothing"}


def main(argv: list[str]) -> int:
    out, files = Path(argv[1]), [Path(a).resolve() for a in argv[2:]]
    t0 = time.perf_counter()
    import airflow.sdk  # noqa: F401  # what every DAG file pays once per process
    from airflow.dag_processing.dagbag import DagBag  # noqa: F401

    airflow_import_s = time.perf_counter() - t0
    counter = Counter()
    install(counter)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "probe_reference.py"
        ref.write_text(REFERENCE_DAG)
        reference = _in_child(ref, counter)
        reference_modules = set(reference.get("modules", []))
        reports = []
        for path in files:
            report = _in_child(path, counter)
            report["extra_modules"] = sorted(set(report.get("modules", [])) - reference_modules)
            reports.append(report)
    out.write_text(
        json.dumps(
            {
                "airflow_import_seconds": airflow_import_s,
                "stdlib": sorted(sys.stdlib_module_names),
                "reference": reference,
                "files": reports,
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
