"""Every DAG file parses cleanly, cheaply and without side effects, and follows the DAG policy.

Each file is parsed by Airflow's own ``DagBag`` in a forked child of a process that
imported Airflow once (the DAG processor's way), see ``probe_parse.py``. While parsing:
no SQL statement may reach any database, no connection or variable may be looked up
(the real lookups are wrapped and counted, not replaced), and no module may be imported
beyond what a DAG using only ``airflow.sdk`` imports, except the standard library and
fraudops' parse-safe ``fraudops.orchestration`` modules. Negative controls prove that
each of these checks catches the fault it is for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.dags.support import DAGS, base_env, run_probe

pytestmark = pytest.mark.slow

DAG_FILES = sorted(DAGS.glob("*.py"))
# Imported while parsing a DAG, these would make every parse (every 30 s, per file) slow.
HEAVY = ("torch", "pandas", "numpy", "pyarrow", "mlflow", "feast", "great_expectations", "evidently", "duckdb",
         "sklearn", "onnx", "onnxruntime", "accelerate", "dvc", "kubernetes")  # fmt: skip
PARSE_SAFE = ("fraudops", "fraudops.orchestration")
# Airflow itself: the task SDK, the core, and the standard provider that ships with it
# (TriggerDagRunOperator, the human-in-the-loop operators). Their own dependencies are
# already installed with Airflow and loaded by the DAG processor anyway.
AIRFLOW_DISTRIBUTIONS = ("apache-airflow-core", "apache-airflow-task-sdk", "apache-airflow-providers-standard")


def _airflow_dependencies() -> set[str]:
    """Top-level module names of Airflow's direct (non-extra) requirements."""
    import re
    from importlib.metadata import packages_distributions, requires

    wanted = set()
    for dist in AIRFLOW_DISTRIBUTIONS:
        for req in requires(dist) or []:
            if "extra ==" not in req:
                wanted.add(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return {
        module
        for module, dists in packages_distributions().items()
        if any(d.lower().replace("_", "-") in wanted for d in dists)
    }


def _allowed(module: str, stdlib: set[str], airflow_deps: set[str]) -> bool:
    top = module.split(".", maxsplit=1)[0]
    return (
        top in stdlib
        or top == "airflow"
        or top in airflow_deps
        or module in PARSE_SAFE
        or module.startswith("fraudops.orchestration.")
        or module.startswith("unusual_prefix_")  # the DAG file itself, as DagBag names it
    )


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow-parse")
    report = run_probe(DAG_FILES, base_env(home), home / "report.json")
    return report


@pytest.fixture(scope="module")
def reports(probe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(r["file"]).name: r for r in probe["files"]}


def test_there_are_dag_files() -> None:
    names = {p.stem for p in DAG_FILES}
    assert {
        "fraud_feature_materialization",
        "fraud_training",
        "fraud_drift_monitoring",
        "fraud_canary_rollout",
    } <= names


def test_the_reference_parse_is_clean(probe: dict[str, Any]) -> None:
    ref = probe["reference"]
    assert "crash" not in ref, ref.get("crash")
    assert ref["import_errors"] == {}
    assert ref["sql"] == [] and ref["calls"] == {}


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
class TestEachDagFile:
    def test_imports_without_errors(self, path: Path, reports: dict[str, dict[str, Any]]) -> None:
        report = reports[path.name]
        assert "crash" not in report, report.get("crash")
        assert report["import_errors"] == {}
        assert report["dag_ids"] == [path.stem], "one DAG per file, named after the file"

    def test_makes_no_database_query(self, path: Path, reports: dict[str, dict[str, Any]]) -> None:
        assert reports[path.name]["sql"] == []

    def test_looks_up_no_connection_or_variable(self, path: Path, reports: dict[str, dict[str, Any]]) -> None:
        assert reports[path.name]["calls"] == {}

    def test_imports_only_airflow_sdk_and_the_standard_library(
        self, path: Path, reports: dict[str, dict[str, Any]], probe: dict[str, Any]
    ) -> None:
        report = reports[path.name]
        stdlib = set(probe["stdlib"])
        heavy = [m for m in report["modules"] if m.split(".")[0] in HEAVY]
        assert heavy == [], f"heavy modules imported while parsing: {heavy}"
        deps = _airflow_dependencies()
        extra = [m for m in report["extra_modules"] if not _allowed(m, stdlib, deps)]
        assert extra == [], f"imported beyond Airflow, the standard library and fraudops.orchestration: {extra}"

    def test_follows_the_dag_policy(self, path: Path, reports: dict[str, dict[str, Any]]) -> None:
        (dag,) = reports[path.name]["dags"]
        assert dag["owner"] == "fraudops-ml"
        assert "fraudops" in dag["tags"] and len(dag["tags"]) >= 2
        assert dag["catchup"] is False
        assert dag["start_date_tz"] == "UTC"
        assert datetime.fromisoformat(dag["start_date"]) < datetime.fromisoformat("2026-06-01T00:00:00+00:00")
        assert dag["module_docstring"] and dag["doc_md"] == dag["module_docstring"]
        for task_id, task in dag["tasks"].items():
            assert task["owner"] == "fraudops-ml", task_id
            assert task["retries"] >= 1, f"{task_id} has no retries"
            assert task["retry_delay_s"] and task["retry_delay_s"] >= 60, f"{task_id} retries without a delay"

    def test_parses_fast(self, path: Path, reports: dict[str, dict[str, Any]]) -> None:
        # Airflow gives a file 30 s (dagbag_import_timeout); the benchmark measures the real figure.
        assert reports[path.name]["parse_seconds"] < 30


def test_start_date_is_fixed(probe: dict[str, Any], tmp_path: Path) -> None:
    """Two parses at different times give the same start date (no `now()` in a DAG)."""
    first = probe
    second = run_probe(DAG_FILES, base_env(tmp_path / "h2"), tmp_path / "b.json")
    starts = [{d["dag_id"]: d["start_date"] for f in r["files"] for d in f["dags"]} for r in (first, second)]
    assert starts[0] == starts[1]


# ----------------------------------------------------------------------------- negative controls

BAD_DAGS = {
    "variable": (
        "from airflow.sdk import Variable\nX = Variable.get('fraudops_anything', default='x')\n",
        lambda r: r["calls"].get("variable", 0) >= 1,
    ),
    "connection": (
        "from airflow.sdk import BaseHook\ntry:\n    BaseHook.get_connection('fraudops_nothing')\nexcept Exception:\n"
        "    pass\n",
        lambda r: r["calls"].get("connection", 0) >= 1,
    ),
    "database": (
        "from sqlalchemy import text\nfrom airflow.utils.session import create_session\n"
        "with create_session() as s:\n    s.execute(text('SELECT 1'))\n",
        lambda r: len(r["sql"]) >= 1,
    ),
    "heavy_import": ("import pyarrow\n", lambda r: any(m.split(".")[0] == "pyarrow" for m in r["modules"])),
}


@pytest.fixture(scope="module")
def bad_reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("bad-dags")
    header = (
        '"""A DAG that breaks a rule."""\nimport datetime as dt\nfrom airflow.sdk import dag, task\n'
        "@dag(schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))\n"
        "def bad_{name}():\n    @task\n    def t():\n        return 1\n    t()\nbad_{name}()\n"
    )
    files = []
    for name, (body, _) in BAD_DAGS.items():
        path = folder / f"bad_{name}.py"
        path.write_text(header.format(name=name) + body)
        files.append(path)
    report = run_probe(files, base_env(folder / "home", dags_folder=folder), folder / "report.json")
    yield {Path(r["file"]).stem.removeprefix("bad_"): r for r in report["files"]}


@pytest.mark.parametrize("name", sorted(BAD_DAGS))
def test_the_checks_catch_a_bad_dag(name: str, bad_reports: dict[str, dict[str, Any]]) -> None:
    report = bad_reports[name]
    assert "crash" not in report, report.get("crash")
    caught = BAD_DAGS[name][1]
    assert caught(report), f"the {name} check missed it: {report}"
