"""The production training runtime: ``fraudops train`` in the training image, on a GPU node.

:func:`training_pod_operator` builds a ``KubernetesPodOperator`` that runs the one
training command (:func:`fraudops.pipeline.training_command`) with:

* a GPU limit (``nvidia.com/gpu``), a node selector and a toleration for GPU nodes;
* credentials from Kubernetes Secrets (never from Airflow's metadata or the DAG file), and
  non-secret settings from a ConfigMap, both as environment variables;
* the result returned through the XCom sidecar: the command writes its JSON summary to
  ``/airflow/xcom/return.json`` and ``do_xcom_push=True`` hands it to the next task;
* the pod deleted when it finishes, whatever the outcome (``on_finish_action``), and when
  the task is killed.

The image and namespace are environment-specific: they are templates read from Airflow
Variables when the task runs (``fraudops_training_image``, ``fraudops_k8s_namespace``),
and the cluster comes from the ``kubernetes_default`` Connection.

Imported only when the runtime is ``kubernetes`` (it loads the Kubernetes client).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from kubernetes.client import models as k8s

from fraudops.orchestration.links import MLflowRunLink, record_training_run

# Where the XCom sidecar reads the result from (the provider's fixed path).
XCOM_RETURN_PATH = "/airflow/xcom/return.json"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True, slots=True)
class SecretEnv:
    """Environment variables from a Kubernetes Secret: one key (``key``) or all of them."""

    secret: str
    env_name: str | None = None
    key: str | None = None

    def to_secret(self) -> Secret:
        if self.env_name is None:
            return Secret("env", None, self.secret)  # every key of the Secret, as env_from
        return Secret("env", self.env_name, self.secret, self.key)


@dataclass(frozen=True, slots=True)
class TrainingPod:
    """What the training pod asks the cluster for. Defaults suit one GPU per run."""

    image: str = "{{ var.value.get('fraudops_training_image', 'ghcr.io/fraudops/fraudops-train:0.1.0') }}"
    namespace: str = "{{ var.value.get('fraudops_k8s_namespace', 'fraudops') }}"
    kubernetes_conn_id: str = "kubernetes_default"
    service_account: str = "fraudops-training"
    gpus: int = 1
    cpu_request: str = "4"
    memory_request: str = "16Gi"
    memory_limit: str = "24Gi"
    # Set by NVIDIA's GPU feature discovery on GPU nodes.
    node_selector: Mapping[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    # GPU node pools are usually tainted so that only pods that ask for GPUs land there.
    tolerations: Sequence[Mapping[str, str]] = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},)
    secrets: Sequence[SecretEnv] = (
        # MLflow, S3 and DVC credentials: every key of the Secret becomes a variable.
        SecretEnv("fraudops-training-env"),
        # The warehouse password, one key mapped to the settings' variable.
        SecretEnv("fraudops-snowflake", "FRAUDOPS_SNOWFLAKE__PASSWORD", "password"),
    )
    config_maps: Sequence[str] = ("fraudops-config",)  # non-secret FRAUDOPS_* settings
    env: Mapping[str, str] = field(default_factory=lambda: {"FRAUDOPS_PROFILE": "production"})
    shm_size: str = "4Gi"  # PyTorch shares tensors through /dev/shm
    # A GPU node may have to be scaled up first: give the pod time to be scheduled.
    startup_timeout_seconds: int = 1800
    active_deadline_seconds: int = 6 * 3600

    def resources(self) -> k8s.V1ResourceRequirements:
        if self.gpus < 1:
            raise ValueError(f"the training pod needs at least one GPU, got {self.gpus}")
        return k8s.V1ResourceRequirements(
            requests={"cpu": self.cpu_request, "memory": self.memory_request, GPU_RESOURCE: str(self.gpus)},
            limits={"memory": self.memory_limit, GPU_RESOURCE: str(self.gpus)},
        )


class TrainingPodOperator(KubernetesPodOperator):
    """``KubernetesPodOperator`` that also links its task to the MLflow run it trained."""

    operator_extra_links = (MLflowRunLink(),)

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        return self._recorded(context, result)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        result = super().trigger_reentry(context, event)
        return self._recorded(context, result)

    def _recorded(self, context: Any, result: Any) -> Any:
        if isinstance(result, dict):
            record_training_run(self, context, result)
        return result


def training_pod_operator(
    command: Sequence[str],
    *,
    task_id: str = "train",
    pod: TrainingPod | None = None,
    **kwargs: Any,
) -> TrainingPodOperator:
    """The training task of the production runtime: ``command`` in the training image on a GPU node.

    ``command`` must write its summary to :data:`XCOM_RETURN_PATH`; its elements may be
    Jinja templates (the training set and data version come from upstream XComs).
    """
    if not command:
        raise ValueError("empty training command")
    if XCOM_RETURN_PATH not in command:
        raise ValueError(f"the training command must write its summary to {XCOM_RETURN_PATH} for the XCom sidecar")
    spec = pod or TrainingPod()
    return TrainingPodOperator(
        task_id=task_id,
        name="fraudops-train",
        image=spec.image,
        namespace=spec.namespace,
        kubernetes_conn_id=spec.kubernetes_conn_id,
        service_account_name=spec.service_account,
        cmds=[command[0]],
        arguments=list(command[1:]),
        env_vars=dict(spec.env),
        secrets=[s.to_secret() for s in spec.secrets],
        configmaps=list(spec.config_maps),
        container_resources=spec.resources(),
        node_selector=dict(spec.node_selector),
        tolerations=[k8s.V1Toleration(**dict(t)) for t in spec.tolerations],
        volumes=[
            k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=spec.shm_size))
        ],
        volume_mounts=[k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm")],
        labels={"app.kubernetes.io/name": "fraudops-training", "app.kubernetes.io/part-of": "fraudops"},
        image_pull_policy="IfNotPresent",
        do_xcom_push=True,
        get_logs=True,
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        startup_timeout_seconds=spec.startup_timeout_seconds,
        active_deadline_seconds=spec.active_deadline_seconds,
        **kwargs,
    )
