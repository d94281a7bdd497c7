"""fraudops Airflow plugin: from the Airflow UI to the tools around the DAGs.

* Menu links (the "fraudops" entry of the navigation bar): the MLflow UI, the registered
  model in MLflow, and the predictor's API docs and health. Their URLs come from the
  ``[fraudops]`` section of the Airflow configuration (``AIRFLOW__FRAUDOPS__MLFLOW_UI_URL``,
  ``AIRFLOW__FRAUDOPS__PREDICTOR_URL``, ``AIRFLOW__FRAUDOPS__MODEL_NAME``), set per
  environment, never in a DAG.
* The "MLflow run" button of training tasks (:class:`~fraudops.orchestration.links.MLflowRunLink`),
  registered here so that Airflow lists it with the plugin. Airflow 3 computes the link
  on the worker when the task ends and the UI reads it back from XCom.
* ``/fraudops/drift/<YYYY-MM-DD>/report.html`` (and ``summary.json``): the daily drift
  report an operator opens from the "Drift report" button of ``fraud_drift_monitoring``,
  served from ``FRAUDOPS_HOME/monitoring`` to logged-in users only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from starlette.requests import Request  # module level: FastAPI resolves the dependency's annotation here

from fraudops.orchestration.links import (
    CONFIG_SECTION,
    DEFAULT_MLFLOW_UI_URL,
    DEFAULT_PREDICTOR_URL,
    MLflowRunLink,
    mlflow_model_url,
)
from fraudops.orchestration.reports import REPORTS_URL_PREFIX, DriftReportLink

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FILES = {"report.html": "text/html; charset=utf-8", "summary.json": "application/json"}


def _url(key: str, default: str) -> str:
    return str(conf.get(CONFIG_SECTION, key, fallback=default) or default).rstrip("/")


def _nav(name: str, href: str) -> dict[str, Any]:
    return {"name": name, "href": href, "destination": "nav", "category": "fraudops"}


def _menu() -> list[dict[str, Any]]:
    mlflow = _url("mlflow_ui_url", DEFAULT_MLFLOW_UI_URL)
    predictor = _url("predictor_url", DEFAULT_PREDICTOR_URL)
    model = _url("model_name", "fraud-detector")
    return [
        _nav("MLflow", mlflow),
        _nav("Model registry", mlflow_model_url(mlflow, model)),
        _nav("Predictor API", f"{predictor}/docs"),
        _nav("Predictor health", f"{predictor}/health"),
    ]


def _reports_app() -> Any:
    """A small FastAPI app serving the drift reports to logged-in users."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    async def logged_in(request: Request) -> None:
        # The UI sends its session as the `_token` cookie; API clients as a bearer token.
        from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
        from airflow.api_fastapi.core_api.security import resolve_user_from_token

        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
        await resolve_user_from_token(token)

    app = FastAPI(title="fraudops reports", dependencies=[Depends(logged_in)])

    @app.get("/drift/{day}/{name}")
    def drift_file(day: str, name: str) -> FileResponse:
        from fraudops.settings import get_settings

        if not _DAY.match(day) or name not in _FILES:
            raise HTTPException(status_code=404, detail="no such report")
        path = Path(get_settings().monitoring_dir) / day / name
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"no drift {name} for {day}: has the drift DAG run that day?")
        return FileResponse(path, media_type=_FILES[name])

    return app


class FraudopsPlugin(AirflowPlugin):
    """Links to MLflow and the predictor; the MLflow-run and drift-report task buttons."""

    name = "fraudops"
    external_views: ClassVar[list[Any]] = _menu()
    operator_extra_links: ClassVar[list[Any]] = [MLflowRunLink(), DriftReportLink()]
    fastapi_apps: ClassVar[list[Any]] = [
        {"app": _reports_app(), "url_prefix": REPORTS_URL_PREFIX, "name": "fraudops reports"}
    ]
