"""The training runtime switch: one command, a GPU pod in production, a local process here.

The training task of ``fraud_training`` is built by ``training_task(...)`` with the
arguments in ``fraudops.orchestration.runtime``. A harness DAG builds the same task the
same way, behind stand-in upstream tasks that return what ``validate``, ``snapshot`` and
``training_set`` return, so that Airflow itself (``airflow dags test``) renders and runs it:

* ``kubernetes``: Airflow renders the templates (XComs, params, Variables) and the
  ``KubernetesPodOperator`` builds the pod; a ``on_pod_manifest_created`` callback saves the
  manifest and stops the task before it would reach a cluster. The manifest is validated
  against the Kubernetes schema.
* ``local``: the same task runs the real ``fraudops train`` on a small training set.

Both DAG files are parsed with each runtime to show the harness's task is the DAG's task.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.dags.support import AIRFLOW_BIN, DAGS, base_env, isolated_airflow, migrate, read_xcom, run_probe

pytestmark = pytest.mark.slow

DATA_VERSION = "0123456789abcdef0123456789abcdef"
K8S_VERSION = "1.31"

HARNESS = '''"""Harness: the training task of fraud_training behind stand-in upstream tasks."""

from __future__ import annotations

import json
import os

from airflow.sdk import dag, task

from fraudops.orchestration import policy
from fraudops.orchestration.runtime import (
    DATA_VERSION_TEMPLATE,
    TRAINING_EXTRA_ARGS,
    TRAINING_SET_TEMPLATE,
    training_task,
)

RUNTIME = os.environ["HARNESS_RUNTIME"]
extra = {}
if RUNTIME == "kubernetes":
    from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback

    class CaptureManifest(KubernetesPodOperatorCallback):
        @staticmethod
        def on_pod_manifest_created(*, pod_request, **kwargs):
            from kubernetes.client import ApiClient

            with open(os.environ["HARNESS_POD_OUT"], "w") as out:
                json.dump(ApiClient().sanitize_for_serialization(pod_request), out)
            raise RuntimeError("pod manifest captured; not sending it to a cluster")

    extra["callbacks"] = [CaptureManifest]


@dag(schedule=None, start_date=policy.START_DATE, catchup=False, params={"epochs": 1},
     default_args=policy.default_args(retries=0), doc_md=__doc__, tags=["fraudops", "test"])
def training_runtime_harness():
    @task(multiple_outputs=False)
    def validate():
        return {"data_docs_page": "/gx/validations/page.html"}

    @task(multiple_outputs=False)
    def snapshot():
        return {"version": os.environ["HARNESS_DATA_VERSION"]}

    @task(multiple_outputs=False)
    def training_set():
        return {"path": os.environ["HARNESS_TRAINING_SET"]}

    train = training_task(
        training_set=TRAINING_SET_TEMPLATE,
        data_version=DATA_VERSION_TEMPLATE,
        extra_args=TRAINING_EXTRA_ARGS,
        runtime=RUNTIME,
        retries=0,
        **extra,
    )
    [validate(), snapshot(), training_set()] >> train


training_runtime_harness()
'''

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: unreachable
  cluster: {server: "https://127.0.0.1:9"}
contexts:
- name: unreachable
  context: {cluster: unreachable, user: nobody}
current-context: unreachable
users:
- name: nobody
  user: {token: not-a-secret}
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrate(tmp_path_factory.mktemp("airflow-template"))


def _harness_env(tmp: Path, template: Path, runtime: str, training_set: str, **extra: str) -> dict[str, str]:
    dags = tmp / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "training_runtime_harness.py").write_text(HARNESS)
    home = isolated_airflow(template, tmp / "airflow")
    return base_env(
        home,
        dags_folder=dags,
        HARNESS_RUNTIME=runtime,
        HARNESS_DATA_VERSION=DATA_VERSION,
        HARNESS_TRAINING_SET=training_set,
        FRAUDOPS_TRAINING_RUNTIME=runtime,
        FRAUDOPS_HOME=str(tmp / "fraudops-home"),
        FRAUDOPS_PROFILE="local",
        **extra,
    )


def _dags_test(env: dict[str, str], tmp: Path) -> tuple[int, str]:
    dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    proc = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "test", "training_runtime_harness", "2026-10-13T00:00:00+00:00",
         "--dagfile-path", str(dags / "training_runtime_harness.py")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    (tmp / "dags-test.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr


def _train_task(report: dict[str, Any], dag_id: str) -> dict[str, Any]:
    for file in report["files"]:
        for dag in file.get("dags", []):
            if dag["dag_id"] == dag_id:
                task: dict[str, Any] = dag["tasks"]["train"]
                return task
    raise AssertionError(f"{dag_id} not parsed: {[f.get('import_errors') or f.get('crash') for f in report['files']]}")


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, template: Path) -> dict[str, Any]:
    """The training pod as the production runtime builds it, rendered by Airflow."""
    tmp = tmp_path_factory.mktemp("kubernetes-runtime")
    (tmp / "kubeconfig").write_text(KUBECONFIG)
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(tmp / "kubeconfig")}}
    env = _harness_env(
        tmp,
        template,
        "kubernetes",
        f"s3://fraudops-data/training_sets/{DATA_VERSION}.parquet",
        HARNESS_POD_OUT=str(tmp / "pod.json"),
        AIRFLOW_CONN_KUBERNETES_DEFAULT=json.dumps(conn),
    )
    code, output = _dags_test(env, tmp)
    assert code != 0, "the harness must stop before reaching a cluster"
    assert "pod manifest captured" in output, output[-3000:]
    manifest: dict[str, Any] = json.loads((tmp / "pod.json").read_text())
    return manifest


def test_the_pod_is_valid_against_the_kubernetes_schema(pod: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_the_pod_runs_the_training_command_on_a_gpu_node(pod: dict[str, Any]) -> None:
    from fraudops.orchestration.kubernetes import XCOM_RETURN_PATH
    from fraudops.pipeline import training_command

    spec = pod["spec"]
    base = next(c for c in spec["containers"] if c["name"] == "base")
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["restartPolicy"] == "Never"
    command = base["command"] + base["args"]
    run_name = command[command.index("--run-name") + 1]
    assert run_name.startswith("training_runtime_harness/manual__")
    expected = training_command(
        f"s3://fraudops-data/training_sets/{DATA_VERSION}.parquet",
        data_version=DATA_VERSION,
        summary_path=XCOM_RETURN_PATH,
        extra_args=["--epochs", "1", "--run-name", run_name, "--validation-report", "/gx/validations/page.html"],
    )
    assert command == expected


def test_the_pod_takes_secrets_from_kubernetes_and_returns_through_the_sidecar(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    base = next(c for c in spec["containers"] if c["name"] == "base")
    env_from = base["envFrom"]
    assert {"secretRef": {"name": "fraudops-training-env"}} in env_from
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in base["env"] if "valueFrom" in e}
    assert secret_env["FRAUDOPS_SNOWFLAKE__PASSWORD"] == {"name": "fraudops-snowflake", "key": "password"}
    # No secret value anywhere in the manifest: only references.
    assert all("value" not in e or e["name"] == "FRAUDOPS_PROFILE" for e in base["env"])
    names = [c["name"] for c in spec["containers"]]
    assert "airflow-xcom-sidecar" in names
    assert {"mountPath": "/airflow/xcom", "name": "xcom"} in base["volumeMounts"]


def test_the_local_runtime_runs_the_same_command(tmp_path: Path, template: Path, pod: dict[str, Any]) -> None:
    """The real `fraudops train` as a child process of the task, on a small training set."""
    import pyarrow.parquet as pq

    from fraudops.data.generate import generate_transactions

    data = tmp_path / f"{DATA_VERSION}.parquet"
    pq.write_table(generate_transactions(4_000, seed=7, days=14), data)
    env = _harness_env(tmp_path, template, "local", str(data), FRAUDOPS_GATE__AUC_FLOOR="0.5")
    code, output = _dags_test(env, tmp_path)
    assert code == 0, output[-4000:]
    db = tmp_path / "airflow" / "airflow.db"
    summary = read_xcom(db, "training_runtime_harness", "train", "return_value")
    assert summary["data_version"] == DATA_VERSION and summary["model_version"] == "1"
    local = read_xcom(db, "training_runtime_harness", "train", "command")
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    remote = base["command"] + base["args"]

    def comparable(cmd: list[str]) -> list[str]:
        out = list(cmd)
        for flag in ("--data", "--summary", "--run-name"):  # where the file is, and when it ran
            out[out.index(flag) + 1] = "*"
        return out

    assert local[0] == remote[0] == "fraudops"
    assert comparable(local) == comparable(remote)
    link = read_xcom(db, "training_runtime_harness", "train", "_link_MLflowRunLink")
    assert link.endswith(f"/runs/{summary['run_id']}")


@pytest.mark.parametrize("runtime", ["local", "kubernetes"])
def test_the_dag_and_the_harness_build_the_same_training_task(tmp_path: Path, runtime: str) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "training_runtime_harness.py").write_text(HARNESS)
    env = base_env(tmp_path / "home", dags_folder=dags, FRAUDOPS_TRAINING_RUNTIME=runtime, HARNESS_RUNTIME=runtime)
    report = run_probe([DAGS / "fraud_training.py", dags / "training_runtime_harness.py"], env, tmp_path / "r.json")
    real, harness = _train_task(report, "fraud_training"), _train_task(report, "training_runtime_harness")
    expected_type = "TrainingPodOperator" if runtime == "kubernetes" else "LocalTrainingOperator"
    assert real["type"] == harness["type"] == expected_type
    for field in ("cmds", "arguments", "training_set", "data_version", "extra_args"):
        assert real[field] == harness[field], field
    if runtime == "kubernetes":  # the pod is deleted when done or killed; results come back by XCom
        assert (real["on_finish_action"], real["on_kill_action"]) == ("delete_pod", "delete_pod")
        assert real["do_xcom_push"] is True
    training_file = next(f for f in report["files"] if f["file"].endswith("fraud_training.py"))
    heavy = [m for m in training_file["modules"] if m.split(".")[0] in ("torch", "pandas", "mlflow", "feast")]
    assert heavy == []
