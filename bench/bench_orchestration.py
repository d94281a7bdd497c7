"""Orchestration overhead: DAG run wall time against the sum of its task durations.

A chain of ``--tasks`` tasks that each sleep ``--sleep`` seconds does no work of its own,
so everything beyond the sum of the task durations (the baseline, measured by Airflow in
the same run) is orchestration: scheduling, starting a task process, the execution API,
XCom, state updates. Two ways to run it on the embedded default:

* ``airflow dags test``: one process runs the tasks in turn (how ``fraudops airflow demo``
  runs the DAGs); the process's wall time includes starting Airflow.
* the real thing: ``airflow standalone`` (scheduler, LocalExecutor, API server, DAG
  processor, triggerer) and a triggered run; each task is a fresh worker process.

    python bench/bench_orchestration.py [--tasks 8] [--sleep 1] [--no-scheduler]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHAIN = '''"""Benchmark chain: tasks that only sleep."""
from __future__ import annotations
import datetime as dt
import time
from airflow.sdk import chain, dag, task

@dag(schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False, tags=["bench"],
     default_args={{"owner": "bench", "retries": 0}})
def bench_chain():
    @task
    def step(i: int) -> int:
        time.sleep({sleep})
        return i
    chain(*[step.override(task_id=f"t{{i}}")(i) for i in range({tasks})])

bench_chain()
'''


def _env(home: Path, dags: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(home / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://localhost:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://localhost:{port}/execution/",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        # `airflow standalone` starts its components as `airflow ...`: this venv's bin on PATH.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def _airflow(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("airflow")), *args]


def _run_stats(db: Path, dag_id: str) -> dict[str, float]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        run = con.execute(
            "SELECT run_id, state, queued_at, start_date, end_date FROM dag_run "
            "WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
        tis = con.execute(
            "SELECT duration, start_date, end_date FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run[0]),
        ).fetchall()
    finally:
        con.close()

    def ts(x: str | None) -> float:
        return datetime.fromisoformat(x).replace(tzinfo=UTC).timestamp() if x else float("nan")

    return {
        "state": run[1],
        "queued_to_end_s": ts(run[4]) - ts(run[2] or run[3]),
        "start_to_end_s": ts(run[4]) - ts(run[3]),
        "first_task_to_last_s": max(ts(t[2]) for t in tis) - min(ts(t[1]) for t in tis),
        "task_sum_s": sum(t[0] or 0.0 for t in tis),
        "tasks": len(tis),
    }


def _wait_db_state(db: Path, dag_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            row = con.execute(
                "SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            con.close()
            if row and row[0] in ("success", "failed"):
                return
        except sqlite3.Error:
            pass
        time.sleep(1)
    raise TimeoutError(f"{dag_id} did not finish within {timeout:.0f} s")


def _report(label: str, stats: dict[str, float], wall: float, sleep: float) -> None:
    n = stats["tasks"]
    base = stats["task_sum_s"]
    print(f"\n== {label}: {n} tasks x {sleep:g} s sleep, run state {stats['state']}")
    if stats["state"] != "success" or not stats["task_sum_s"]:
        print(f"   the run did not succeed ({n} task instances, {stats['task_sum_s']:.1f} s of task time)")
        return
    print(f"   sum of task durations (baseline)   {base:8.1f} s")
    span = stats["first_task_to_last_s"]
    print(f"   first task start -> last task end  {span:8.1f} s   x{span / base:.2f}")
    print(f"   whole run (as the operator waits)  {wall:8.1f} s   x{wall / base:.2f}")
    print(f"   overhead per task                  {(wall - base) / n:8.2f} s   (between tasks only: "
          f"{(stats['first_task_to_last_s'] - base) / max(n - 1, 1):.2f} s)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=1.0)
    # Not 8793: that is the port of Airflow's own worker log server, which standalone starts too.
    parser.add_argument("--port", type=int, default=0, help="API server port (default: a free one)")
    parser.add_argument("--scheduler", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        home, dags = Path(tmp) / "airflow", Path(tmp) / "dags"
        dags.mkdir()
        (home / "plugins").mkdir(parents=True)
        (dags / "bench_chain.py").write_text(CHAIN.format(tasks=args.tasks, sleep=args.sleep))
        if not args.port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                args.port = sock.getsockname()[1]
        env = _env(home, dags, args.port)
        db = home / "airflow.db"
        subprocess.run(_airflow("db", "migrate"), env=env, capture_output=True, check=True)

        t0 = time.perf_counter()
        proc = subprocess.run(
            _airflow("dags", "test", "bench_chain", datetime.now(UTC).isoformat(), "--dagfile-path",
                     str(dags / "bench_chain.py")),
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
        stats = _run_stats(db, "bench_chain")
        _report("airflow dags test (one process, Airflow start included)", stats, wall, args.sleep)
        results = {"dags_test": {**stats, "wall_s": wall}}

        if args.scheduler:
            log = open(Path(tmp) / "standalone.log", "wb")  # noqa: SIM115  # closed below
            server = subprocess.Popen(
                _airflow("standalone"), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                started = time.perf_counter()
                deadline = time.monotonic() + args.timeout
                while True:  # the DAG processor must have parsed the file before it can be triggered
                    t = subprocess.run(
                        _airflow("dags", "trigger", "bench_chain"), env=env, capture_output=True, text=True, check=False
                    )
                    if t.returncode == 0:
                        break
                    if time.monotonic() > deadline or server.poll() is not None:
                        print(t.stderr[-2000:], file=sys.stderr)
                        return 1
                    time.sleep(3)
                ready = time.perf_counter() - started
                _wait_db_state(db, "bench_chain", args.timeout)
                stats = _run_stats(db, "bench_chain")
                _report("scheduler + LocalExecutor (airflow standalone)", stats, stats["queued_to_end_s"], args.sleep)
                if stats["state"] != "success":
                    print((Path(tmp) / "standalone.log").read_text(errors="replace")[-4000:], file=sys.stderr)
                print(f"   (Airflow took {ready:.0f} s to start and accept the trigger)")
                results["scheduler"] = stats
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                log.close()
    print("\n" + json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
