"""One settings object for every part of fraudops.

Values come from the environment (prefix ``FRAUDOPS_``, nested fields with ``__``) and
an optional ``.env`` file. Two profiles:

* ``local`` -- the embedded default: everything under one directory, ``FRAUDOPS_HOME``
  (``.fraudops/`` in the current directory by default): DuckDB warehouse, SQLite for
  MLflow and the Feast online store, local DVC remote, local artifacts.
* ``production`` -- Snowflake, Redis, PostgreSQL-backed MLflow, S3 artifacts and DVC
  remote. The same code paths; only these settings change. Production refuses to start
  with missing endpoints or placeholder secrets.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["local", "production"]

_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "password", "todo"}


class SnowflakeSettings(BaseModel):
    """Connection to the production warehouse (and Feast's Snowflake offline store)."""

    account: str = ""
    user: str = ""
    password: SecretStr = SecretStr("")
    role: str = ""
    warehouse: str = ""
    database: str = "FRAUDOPS"
    schema_: str = Field(default="PUBLIC", alias="schema")

    model_config = {"populate_by_name": True}


class GateSettings(BaseModel):
    """Promotion gate: absolute floor and the allowed regression against the champion."""

    auc_floor: float = Field(default=0.85, ge=0.0, le=1.0)
    max_regression: float = Field(default=0.02, ge=0.0, le=1.0)


class ValidationSettings(BaseModel):
    """Bounds of the data-validation gate."""

    min_rows: int = Field(default=1_000, ge=1)
    max_rows: int = Field(default=50_000_000, ge=1)
    fraud_rate_min: float = Field(default=0.001, ge=0.0, le=1.0)
    fraud_rate_max: float = Field(default=0.05, ge=0.0, le=1.0)
    # The newest event of a batch must be at most this old, relative to the
    # reference time of the run (the end of its data interval, never "now" in a DAG).
    max_staleness_hours: float = Field(default=72.0, gt=0)


class CanarySettings(BaseModel):
    share: float = Field(default=0.05, ge=0.0, le=1.0)
    watch_hours: float = Field(default=24.0, ge=0.0)


class DriftSettings(BaseModel):
    psi_threshold: float = Field(default=0.2, gt=0)
    dataset_drift_share: float = Field(default=0.3, ge=0.0, le=1.0)
    alert_share: float = Field(default=0.5, ge=0.0, le=1.0)
    retrain_cooldown_hours: float = Field(default=24.0, ge=0.0)


class Settings(BaseSettings):
    """Everything environment-specific. Secrets never live in the repository."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUDOPS_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    profile: Profile = "local"
    home: Path = Field(default_factory=lambda: Path.cwd() / ".fraudops")
    seed: int = 42

    # Warehouse: DuckDB file on the embedded default, Snowflake in production.
    duckdb_path: Path | None = None
    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    transactions_table: str = "TRANSACTIONS"
    labels_table: str = "LABELS"

    # Feature store.
    feast_project: str = "fraudops"
    redis_url: str = ""  # production online store, e.g. redis://redis:6379/0

    # Versioned snapshots: a local DVC remote by default, S3 in production.
    dvc_remote_url: str = ""

    # Tracking and registry.
    mlflow_tracking_uri: str = ""
    mlflow_artifact_root: str = ""
    model_name: str = "fraud-detector"

    # Where the predictor writes its prediction log and the drift job and the canary read
    # it: "" = FRAUDOPS_HOME/prediction_log; any PyArrow filesystem URL (s3://...) in production.
    prediction_log_uri: str = ""

    gate: GateSettings = Field(default_factory=GateSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    canary: CanarySettings = Field(default_factory=CanarySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.profile != "production":
            return self
        missing: list[str] = []
        if not self.snowflake.account:
            missing.append("FRAUDOPS_SNOWFLAKE__ACCOUNT")
        if self.snowflake.password.get_secret_value().lower() in _PLACEHOLDERS:
            missing.append("FRAUDOPS_SNOWFLAKE__PASSWORD (missing or a placeholder)")
        if not self.redis_url:
            missing.append("FRAUDOPS_REDIS_URL")
        if not self.mlflow_tracking_uri:
            missing.append("FRAUDOPS_MLFLOW_TRACKING_URI")
        if not self.dvc_remote_url:
            missing.append("FRAUDOPS_DVC_REMOTE_URL")
        if missing:
            raise ValueError("production profile needs: " + ", ".join(missing))
        return self

    # Derived locations. All local state lives under ``home``.
    @property
    def warehouse_path(self) -> Path:
        return self.duckdb_path or self.home / "warehouse.duckdb"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feature_repo"

    @property
    def gx_dir(self) -> Path:
        return self.home / "gx"

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def dvc_remote(self) -> str:
        return self.dvc_remote_url or str(self.home / "dvc-remote")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.home / "mlartifacts").as_uri()

    @property
    def bundles_dir(self) -> Path:
        return self.home / "bundles"

    @property
    def prediction_log_dir(self) -> Path:
        return self.home / "prediction_log"

    @property
    def prediction_log_root(self) -> str | Path:
        """The prediction log's location: the configured URL, else the local folder."""
        return self.prediction_log_uri or self.prediction_log_dir

    @property
    def monitoring_dir(self) -> Path:
        return self.home / "monitoring"

    def ensure_home(self) -> Path:
        """Create the state directory (only the local profile writes here)."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
