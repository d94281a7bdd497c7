"""Links from Airflow to the tools around it: the MLflow run of a training task, the UIs.

Where the MLflow UI and the predictor live is environment-specific, so it is never in a
DAG file. Workers read the Airflow Variables ``fraudops_mlflow_ui_url`` and
``fraudops_predictor_url`` while a task runs, falling back to the ``[fraudops]`` section of
the Airflow configuration (``AIRFLOW__FRAUDOPS__MLFLOW_UI_URL``...); the API server's menu
links (``plugins/fraudops_plugin.py``) read that configuration section.

In Airflow 3 an operator's extra link is computed on the worker when the task ends and
kept as an XCom, which the UI reads: :class:`MLflowRunLink` therefore returns what the
training operator remembered of its run (:func:`record_training_run`).

Parse-time module: standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

CONFIG_SECTION = "fraudops"
MLFLOW_UI_VARIABLE = "fraudops_mlflow_ui_url"
PREDICTOR_VARIABLE = "fraudops_predictor_url"
DEFAULT_MLFLOW_UI_URL = "http://localhost:5000"
DEFAULT_PREDICTOR_URL = "http://localhost:8000"
RUN_ID_XCOM = "mlflow_run_id"
RUN_URL_XCOM = "mlflow_run_url"


def configured_url(key: str, default: str) -> str:
    """``[fraudops] <key>`` of the Airflow configuration (environment overrides apply)."""
    from airflow.sdk import conf

    value = conf.get(CONFIG_SECTION, key, fallback=default)
    return str(value or default).rstrip("/")


def runtime_url(variable: str, config_key: str, default: str) -> str:
    """A URL as a running task sees it: the Variable if set, else the configuration."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(variable, default=None)
    except Exception as exc:  # no API server to ask (a bare unit test): configuration only
        log.debug("Variable %s unavailable (%s); using the configuration", variable, exc)
        value = None
    return str(value).rstrip("/") if value else configured_url(config_key, default)


def mlflow_run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run."""
    return f"{base_url.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}"


def mlflow_model_url(base_url: str, model_name: str, version: str | None = None) -> str:
    """The MLflow UI page of a registered model (or one of its versions)."""
    page = f"{base_url.rstrip('/')}/#/models/{quote(model_name)}"
    return f"{page}/versions/{quote(str(version))}" if version else page


def record_training_run(operator: BaseOperator, context: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """Remember a finished training run on its operator and in XCom; returns the run's URL.

    ``summary`` is the JSON summary of ``fraudops train`` (``run_id``, ``experiment_id``).
    The operator's :class:`MLflowRunLink` reads ``operator.mlflow_run_url`` when the task
    ends; the XComs ``mlflow_run_id`` and ``mlflow_run_url`` serve downstream tasks.
    """
    run_id = str(summary.get("run_id") or "")
    experiment_id = str(summary.get("experiment_id") or "")
    if not run_id:
        return ""
    base = runtime_url(MLFLOW_UI_VARIABLE, "mlflow_ui_url", DEFAULT_MLFLOW_UI_URL)
    url = mlflow_run_url(base, experiment_id or "0", run_id)
    operator.mlflow_run_url = url  # type: ignore[attr-defined]  # read back by MLflowRunLink
    ti = context["ti"]
    ti.xcom_push(key=RUN_ID_XCOM, value=run_id)
    ti.xcom_push(key=RUN_URL_XCOM, value=url)
    log.info("MLflow run %s: %s", run_id, url)
    return url


class MLflowRunLink(BaseOperatorLink):
    """The "MLflow run" button of a training task: the run it trained."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return str(getattr(operator, "mlflow_run_url", "") or "")
