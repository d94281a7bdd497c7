"""The orchestration helpers that need no running Airflow: the runtime switch, the DAG
policy, time conversion, the embedded Airflow's environment and login, and the CLI's
promise not to load Airflow into its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fraudops.orchestration import policy
from fraudops.orchestration.context import data_interval, run_time, utc_datetime
from fraudops.orchestration.runtime import RUNTIME_ENV, training_runtime


class TestRuntimeSwitch:
    def test_local_by_default(self) -> None:
        assert training_runtime({}) == "local"

    def test_kubernetes_in_production(self) -> None:
        assert training_runtime({"FRAUDOPS_PROFILE": "production"}) == "kubernetes"

    def test_explicit_choice_wins(self) -> None:
        assert training_runtime({"FRAUDOPS_PROFILE": "production", RUNTIME_ENV: "local"}) == "local"
        assert training_runtime({RUNTIME_ENV: " Kubernetes "}) == "kubernetes"

    def test_unknown_runtime_is_refused_by_name(self) -> None:
        with pytest.raises(ValueError, match=r"FRAUDOPS_TRAINING_RUNTIME='docker'.*local, kubernetes"):
            training_runtime({RUNTIME_ENV: "docker"})


class TestPolicy:
    def test_default_args_retry_with_a_delay(self) -> None:
        args = policy.default_args()
        assert args["owner"] == "fraudops-ml" and args["retries"] == 2
        assert args["retry_delay"] >= timedelta(minutes=1)

    def test_retries_cap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(policy.RETRIES_CAP_ENV, "0")
        assert policy.default_args()["retries"] == 0
        assert policy.capped_retries(1) == 0
        monkeypatch.setenv(policy.RETRIES_CAP_ENV, "five")
        with pytest.raises(ValueError, match="FRAUDOPS_AIRFLOW_MAX_RETRIES='five'"):
            policy.capped_retries(2)

    def test_start_date_is_fixed_and_aware(self) -> None:
        assert policy.START_DATE.tzinfo is not None and datetime(2026, 1, 1, tzinfo=UTC) == policy.START_DATE


class TestTimes:
    def test_pendulum_becomes_a_plain_utc_datetime(self) -> None:
        import pendulum

        value = utc_datetime(pendulum.datetime(2026, 9, 15, 2, tz="Europe/Paris"))
        assert type(value) is datetime and value == datetime(2026, 9, 15, 0, tzinfo=UTC)
        # The arithmetic the DAGs do keeps the timezone (pendulum's would drop it).
        assert (value - timedelta(days=14)).tzinfo is UTC

    def test_strings_and_naive_values_are_utc(self) -> None:
        assert utc_datetime("2026-09-15T00:00:00") == datetime(2026, 9, 15, tzinfo=UTC)
        assert utc_datetime("2026-09-15T02:00:00+02:00") == datetime(2026, 9, 15, tzinfo=UTC)

    def test_bad_values_are_refused(self) -> None:
        with pytest.raises(TypeError, match="expected a datetime"):
            utc_datetime(12)

    def test_run_time_and_interval(self) -> None:
        end = datetime(2026, 9, 15, tzinfo=UTC)
        context = {"data_interval_start": end - timedelta(hours=1), "data_interval_end": end}
        assert data_interval(context) == (end - timedelta(hours=1), end) and run_time(context) == end
        with pytest.raises(ValueError, match="no data interval"):
            data_interval({"data_interval_start": None, "data_interval_end": None})


class TestEmbeddedAirflow:
    def test_environment(self, fraudops_home: Path) -> None:
        from fraudops.orchestration.bootstrap import embedded_airflow
        from fraudops.settings import get_settings

        airflow = embedded_airflow(get_settings(), api_port=8123)
        env = airflow.env({})
        assert env["AIRFLOW_HOME"] == str(fraudops_home.resolve() / "airflow")
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{fraudops_home.resolve()}/airflow/airflow.db"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
        assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"], "fraud_training.py").is_file()
        assert Path(env["AIRFLOW__CORE__PLUGINS_FOLDER"], "fraudops_plugin.py").is_file()
        assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "8123"
        assert env["FRAUDOPS_TRAINING_RUNTIME"] == "local"

    def test_admin_password_is_created_once_and_kept(
        self, fraudops_home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from fraudops.orchestration.bootstrap import PASSWORD_ENV, embedded_airflow
        from fraudops.settings import get_settings

        monkeypatch.delenv(PASSWORD_ENV, raising=False)
        airflow = embedded_airflow(get_settings())
        first = airflow.admin_password()
        assert len(first) >= 12 and airflow.admin_password() == first
        assert json.loads(airflow.passwords_file.read_text()) == {"admin": first}
        assert airflow.passwords_file.stat().st_mode & 0o077 == 0, "the password file is readable by others"
        monkeypatch.setenv(PASSWORD_ENV, "chosen-by-the-operator")
        assert airflow.admin_password() == "chosen-by-the-operator"

    def test_missing_dags_folder_is_named(self, fraudops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from fraudops.orchestration.bootstrap import DAGS_FOLDER_ENV, AirflowSetupError, project_folder

        monkeypatch.setenv(DAGS_FOLDER_ENV, str(fraudops_home / "nowhere"))
        with pytest.raises(AirflowSetupError, match=r"FRAUDOPS_AIRFLOW_DAGS_FOLDER=.*no such folder"):
            project_folder("dags", DAGS_FOLDER_ENV)


def test_the_cli_does_not_load_airflow_into_its_own_process() -> None:
    """Importing Airflow reads (and creates) ~/airflow: the CLI only starts Airflow processes."""
    code = (
        "import sys; import fraudops.cli.main, fraudops.orchestration.bootstrap, fraudops.orchestration.runs; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_demo_refuses_the_production_profile() -> None:
    env = {"FRAUDOPS_PROFILE": "production", "FRAUDOPS_SNOWFLAKE__ACCOUNT": "acct",
           "FRAUDOPS_SNOWFLAKE__PASSWORD": "a-real-one", "FRAUDOPS_REDIS_URL": "redis://r:6379/0",
           "FRAUDOPS_MLFLOW_TRACKING_URI": "postgresql://m/m", "FRAUDOPS_DVC_REMOTE_URL": "s3://b/dvc"}  # fmt: skip
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("fraudops")), "airflow", "demo"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "COLUMNS": "200"},
        check=False,
    )
    assert proc.returncode == 1
    assert "embedded default" in proc.stderr and "airflow.cfg.example" in proc.stderr
