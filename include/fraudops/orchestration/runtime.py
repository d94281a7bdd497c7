"""The training runtime switch: one training command, run where the profile says.

* ``local`` (the embedded default): :class:`~fraudops.orchestration.local.LocalTrainingOperator`
  runs the command as a child process of the worker.
* ``kubernetes`` (production): :func:`~fraudops.orchestration.kubernetes.training_pod_operator`
  runs it in the training image on a GPU node and gets the result through the XCom sidecar.

Both build the command with :func:`fraudops.pipeline.training_command`, so the two cannot
differ but for where the summary is written. The switch is the environment variable
``FRAUDOPS_TRAINING_RUNTIME`` (``local`` | ``kubernetes``; by default ``kubernetes`` when
``FRAUDOPS_PROFILE=production``, else ``local``). It is read while the DAG is parsed,
because it decides which operator the training task is: set it in the environment of
the dag-processor and the workers alike (a deployment setting, not a secret).

Parse-time module: standard library and ``airflow.sdk`` only; the Kubernetes provider
loads only when the runtime is ``kubernetes``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from fraudops.orchestration.kubernetes import TrainingPod

Runtime = Literal["local", "kubernetes"]
RUNTIMES: tuple[Runtime, ...] = ("local", "kubernetes")
RUNTIME_ENV = "FRAUDOPS_TRAINING_RUNTIME"

# What the training task of ``fraud_training`` passes to the command, as templates rendered
# when it runs (in either runtime): the upstream tasks' XComs and the run's params.
TRAINING_SET_TEMPLATE = "{{ ti.xcom_pull(task_ids='training_set')['path'] }}"
DATA_VERSION_TEMPLATE = "{{ ti.xcom_pull(task_ids='snapshot')['version'] }}"
TRAINING_EXTRA_ARGS = (
    "--epochs",
    "{{ params.epochs }}",
    "--run-name",
    "{{ dag.dag_id }}/{{ run_id }}",
    "--validation-report",  # lineage: the Data Docs page of the validation that passed
    "{{ (ti.xcom_pull(task_ids='validate') or {}).get('data_docs_page') or '' }}",
)


def training_runtime(environ: Mapping[str, str] | None = None) -> Runtime:
    """The runtime the environment asks for (see the module docstring)."""
    env = os.environ if environ is None else environ
    value = env.get(RUNTIME_ENV, "").strip().lower()
    if not value:
        return "kubernetes" if env.get("FRAUDOPS_PROFILE", "").strip().lower() == "production" else "local"
    if value not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={value!r}: choose one of {', '.join(RUNTIMES)}")
    return value


def training_task(
    *,
    training_set: str,
    data_version: str,
    extra_args: Sequence[str] = (),
    task_id: str = "train",
    runtime: Runtime | None = None,
    pod: TrainingPod | None = None,
    **operator_kwargs: Any,
) -> BaseOperator:
    """The training task of a DAG, for the runtime of this deployment.

    ``training_set``, ``data_version`` and ``extra_args`` may be Jinja templates (they are
    rendered when the task runs, in either runtime). ``pod`` tunes the GPU pod.
    """
    chosen = runtime or training_runtime()
    if chosen == "local":
        from fraudops.orchestration.local import LocalTrainingOperator

        return LocalTrainingOperator(
            task_id=task_id,
            training_set=training_set,
            data_version=data_version,
            extra_args=extra_args,
            **operator_kwargs,
        )
    from fraudops.orchestration.kubernetes import XCOM_RETURN_PATH, training_pod_operator
    from fraudops.pipeline import training_command

    command = training_command(
        training_set, data_version=data_version, summary_path=XCOM_RETURN_PATH, extra_args=list(extra_args)
    )
    return training_pod_operator(command, task_id=task_id, pod=pod, **operator_kwargs)
