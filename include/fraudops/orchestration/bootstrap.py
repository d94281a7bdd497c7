"""Airflow on the embedded default: its home, metadata database, login and environment.

Everything lives under ``settings.home / "airflow"`` (``AIRFLOW_HOME``): a SQLite metadata
database, Airflow's own ``airflow.cfg`` (written by Airflow on first use, with its
generated Fernet and JWT secrets), logs, and the password file of the simple auth
manager. The configuration that matters to fraudops is passed as ``AIRFLOW__*``
environment variables to every Airflow process, so it is visible in one place
(:meth:`EmbeddedAirflow.env`) and wins over ``airflow.cfg``:

* ``LocalExecutor`` with SQLite (Airflow 3 has no SequentialExecutor), two workers;
* this project's ``dags/`` and ``plugins/`` folders, no example DAGs;
* the simple auth manager with one admin user whose password is generated on first
  use, kept in the password file, and printed by ``fraudops airflow init`` / ``up``
  (or set with ``FRAUDOPS_AIRFLOW_PASSWORD``);
* the API server on 127.0.0.1 only: this is a laptop setup, not a shared one;
* the ``[fraudops]`` URLs of the MLflow UI and the predictor (plugin links).

Production does not use this module: see ``airflow.cfg.example``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fraudops.settings import Settings

log = logging.getLogger(__name__)

ADMIN_USER = "admin"
PASSWORD_ENV = "FRAUDOPS_AIRFLOW_PASSWORD"
DAGS_FOLDER_ENV = "FRAUDOPS_AIRFLOW_DAGS_FOLDER"
PLUGINS_FOLDER_ENV = "FRAUDOPS_AIRFLOW_PLUGINS_FOLDER"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
_STAMP = ".fraudops-migrated"


class AirflowSetupError(RuntimeError):
    """The embedded Airflow cannot be set up (folders missing, migration failed...)."""


def _has_python_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.py"))


def project_folder(name: str, env_var: str) -> Path:
    """This project's ``dags/`` or ``plugins/`` folder.

    Looked for in this order: the environment variable ``env_var``; ``./<name>`` in the
    current directory; ``<name>`` beside the ``include/`` folder this package was installed
    from (an editable install of a clone).
    """
    override = os.environ.get(env_var)
    if override:
        path = Path(override).expanduser().resolve()
        if not path.is_dir():
            raise AirflowSetupError(f"{env_var}={override}: no such folder")
        return path
    candidates = [Path.cwd() / name]
    here = Path(__file__).resolve()
    # include/fraudops/orchestration/bootstrap.py -> the repository root is 3 levels up
    if len(here.parents) > 3:
        candidates.append(here.parents[3] / name)
    for candidate in candidates:
        if _has_python_files(candidate):
            return candidate.resolve()
    raise AirflowSetupError(
        f"cannot find this project's {name}/ folder (looked in {', '.join(str(c) for c in candidates)}); "
        f"run from the repository root or set {env_var}"
    )


@dataclass(frozen=True, slots=True)
class EmbeddedAirflow:
    """The embedded Airflow of one ``FRAUDOPS_HOME``."""

    home: Path
    fraudops_home: Path
    dags_folder: Path
    plugins_folder: Path
    api_port: int = 8080
    mlflow_port: int = 5000
    predictor_url: str = "http://localhost:8000"
    admin_user: str = ADMIN_USER

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    @property
    def api_url(self) -> str:
        return f"http://localhost:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://localhost:{self.mlflow_port}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of every Airflow process (and of the tasks it runs)."""
        env = dict(os.environ if base is None else base)
        # `airflow standalone` starts its components as `airflow ...` by name: the
        # installation's bin folder must be on PATH even when the venv is not activated.
        bindir = str(Path(sys.executable).parent)
        if bindir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join(p for p in (bindir, env.get("PATH", "")) if p)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "FRAUDOPS_HOME": str(self.fraudops_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                # Each LocalExecutor worker loads the heavy libraries of its task: two at a
                # time is what a laptop (and SQLite's single writer) takes well.
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.admin_user}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                # Operators trigger runs from the UI; a DAG paused at creation would queue them silently.
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__FRAUDOPS__MLFLOW_UI_URL": self.mlflow_url,
                "AIRFLOW__FRAUDOPS__PREDICTOR_URL": self.predictor_url,
                "AIRFLOW__FRAUDOPS__AIRFLOW_UI_URL": self.api_url,
                # The local runtime: `fraudops train` as a child process of the worker.
                "FRAUDOPS_TRAINING_RUNTIME": env.get("FRAUDOPS_TRAINING_RUNTIME", "local"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def admin_password(self) -> str:
        """The admin password (created on first use; ``FRAUDOPS_AIRFLOW_PASSWORD`` sets it)."""
        wanted = os.environ.get(PASSWORD_ENV)
        current: dict[str, Any] = {}
        if self.passwords_file.is_file():
            try:
                loaded = json.loads(self.passwords_file.read_text() or "{}")
                current = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                log.warning("%s is not JSON; writing a new one", self.passwords_file)
        password = wanted or current.get(self.admin_user) or secrets.token_urlsafe(12)
        if current.get(self.admin_user) != password:
            current[self.admin_user] = password
            self.home.mkdir(parents=True, exist_ok=True)
            tmp = self.passwords_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(current) + "\n")
            tmp.chmod(0o600)
            os.replace(tmp, self.passwords_file)
        return str(password)


def embedded_airflow(
    settings: Settings,
    *,
    api_port: int = 8080,
    mlflow_port: int = 5000,
    predictor_url: str = "http://localhost:8000",
) -> EmbeddedAirflow:
    """The embedded Airflow of ``settings.home`` (nothing is created yet)."""
    home = settings.home.resolve()
    return EmbeddedAirflow(
        home=home / "airflow",
        fraudops_home=home,
        dags_folder=project_folder("dags", DAGS_FOLDER_ENV),
        plugins_folder=project_folder("plugins", PLUGINS_FOLDER_ENV),
        api_port=api_port,
        mlflow_port=mlflow_port,
        predictor_url=predictor_url,
    )


def airflow_version() -> str:
    """The installed Airflow's version (read from its metadata, without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-airflow-core")
    except PackageNotFoundError:
        raise AirflowSetupError("Apache Airflow is not installed: pip install 'fraudops[airflow]'") from None


def run_airflow(
    airflow: EmbeddedAirflow, *args: str, log_file: Path | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow <args>`` in the embedded environment; output to ``log_file`` if given."""
    from fraudops.orchestration.process import resolve_executable

    argv = resolve_executable(["airflow", *args])
    env = airflow.env()
    if log_file is None:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        proc = subprocess.run(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
    return proc


def initialize(airflow: EmbeddedAirflow, *, force: bool = False) -> dict[str, Any]:
    """Create the home, the admin login and the metadata database (idempotent).

    ``airflow db migrate`` runs when the database is new, when Airflow was upgraded since
    the last migration, or when ``force``; otherwise this returns at once.
    """
    airflow.home.mkdir(parents=True, exist_ok=True)
    password = airflow.admin_password()
    stamp = airflow.home / _STAMP
    wanted = airflow_version()
    migrated = False
    seconds = 0.0
    if force or not airflow.db_path.is_file() or not stamp.is_file() or stamp.read_text().strip() != wanted:
        t0 = time.perf_counter()
        log_file = airflow.home / "logs" / "db-migrate.log"
        proc = run_airflow(airflow, "db", "migrate", log_file=log_file)
        if proc.returncode != 0:
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.is_file() else ""
            raise AirflowSetupError(f"`airflow db migrate` failed (exit {proc.returncode}); log {log_file}:\n{tail}")
        stamp.write_text(wanted + "\n")
        migrated = True
        seconds = time.perf_counter() - t0
    return {
        "airflow_home": str(airflow.home),
        "airflow_version": wanted,
        "database": str(airflow.db_path),
        "dags_folder": str(airflow.dags_folder),
        "plugins_folder": str(airflow.plugins_folder),
        "executor": "LocalExecutor",
        "migrated": migrated,
        "migrate_seconds": round(seconds, 2),
        "login": {"user": airflow.admin_user, "password": password},
        "ui": airflow.api_url,
    }
