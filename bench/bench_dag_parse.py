"""Parse time of each DAG file, against a DAG that uses only ``airflow.sdk``.

Airflow's DAG processor re-parses every file every ``min_file_process_interval`` (30 s)
and kills a parse after ``dagbag_import_timeout`` (30 s). We want well under a second.
Measured the processor's way: one process imports Airflow, then each parse of a file
happens in a forked child (``DagBag(file)``), repeated; the median is reported. The
baseline is a reference DAG of the same shape that imports nothing but ``airflow.sdk``,
parsed the same way in the same run, so the ratio is what fraudops adds.

    python bench/bench_dag_parse.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"

REFERENCE = '''"""Reference DAG: airflow.sdk only."""
from __future__ import annotations
import datetime as dt
from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, task

A = Asset(name="bench_reference", uri="bench://reference")

@dag(schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
     catchup=False, params={"x": Param(1, type="integer")}, doc_md=__doc__, tags=["bench"],
     default_args={"owner": "bench", "retries": 2, "retry_delay": dt.timedelta(minutes=5)})
def bench_reference():
    @task
    def a() -> dict:
        return {}
    @task
    def b(v: dict) -> dict:
        return v
    @task.branch
    def c(v: dict) -> str:
        return "d"
    @task(outlets=[A])
    def d(v: dict) -> None:
        return None
    x = b(a())
    c(x) >> d(x)

bench_reference()
'''


def child(files: list[str], repeat: int) -> None:
    """In the Airflow environment: import once, then time DagBag(file) in forked children."""
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag

    import_s = time.perf_counter() - t0
    out: dict[str, object] = {"airflow_import_s": import_s, "files": {}}
    for path in files:
        times = []
        errors: dict[str, str] = {}
        for _ in range(repeat):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                start = time.perf_counter()
                bag = DagBag(dag_folder=path, safe_mode=False)
                took = time.perf_counter() - start
                with os.fdopen(w, "w") as f:
                    json.dump({"s": took, "errors": {str(k): str(v) for k, v in bag.import_errors.items()}}, f)
                os._exit(0)
            os.close(w)
            with os.fdopen(r) as f:
                result = json.loads(f.read())
            os.waitpid(pid, 0)
            times.append(result["s"])
            errors.update(result["errors"])
        out["files"][path] = {"median_s": statistics.median(times), "min_s": min(times), "errors": errors}  # type: ignore[index]
    print(json.dumps(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.repeat)
        return 0

    files = sorted(DAGS.glob("*.py"))
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        ref = Path(tmp) / "bench_reference.py"
        ref.write_text(REFERENCE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env.update(
            AIRFLOW_HOME=str(Path(tmp) / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{Path(tmp) / 'airflow.db'}",
            FRAUDOPS_TRAINING_RUNTIME="local",
        )
        cmd = [sys.executable, __file__, "--repeat", str(args.repeat), "--child", str(ref), *map(str, files)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    base = result["files"][str(ref)]["median_s"]
    print(f"Airflow import (once per DAG-processor process): {result['airflow_import_s']:.2f} s")
    print(f"{'file':40s} {'median':>9s} {'min':>9s} {'vs airflow.sdk-only DAG':>24s}")
    print(
        f"{'(reference: airflow.sdk only)':40s} {base * 1000:7.0f}ms {result['files'][str(ref)]['min_s'] * 1000:7.0f}ms"
    )
    worst = 0.0
    for path in files:
        r = result["files"][str(path)]
        worst = max(worst, r["median_s"])
        flag = "" if not r["errors"] else f"  IMPORT ERRORS: {r['errors']}"
        print(
            f"{path.name:40s} {r['median_s'] * 1000:7.0f}ms {r['min_s'] * 1000:7.0f}ms "
            f"{r['median_s'] / base:23.2f}x{flag}"
        )
    print(f"slowest file: {worst:.3f} s = {worst / 30:.1%} of dagbag_import_timeout (30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
