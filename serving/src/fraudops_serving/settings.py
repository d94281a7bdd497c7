"""Configuration of the predictor, from the environment.

The variables that the rest of fraudops reads too keep their names, so that one
environment configures every part: ``FRAUDOPS_HOME``, ``FRAUDOPS_MLFLOW_TRACKING_URI``,
``FRAUDOPS_MODEL_NAME``, ``FRAUDOPS_REDIS_URL``, ``FRAUDOPS_FEAST_PROJECT`` and
``FRAUDOPS_CANARY__SHARE``. Everything that only the predictor reads has the prefix
``FRAUDOPS_SERVING_`` (e.g. ``FRAUDOPS_SERVING_API_KEYS``). List values are JSON
(``["a","b"]``) or comma-separated.

Where bundles come from:

* ``FRAUDOPS_SERVING_BUNDLE_DIR`` set: the champion bundle in that directory (and the
  challenger in ``FRAUDOPS_SERVING_CHALLENGER_DIR`` when set), for deployments without
  registry access. The directories are polled: a bundle published there (atomically,
  e.g. by ``fraudops export``) is loaded, checked and swapped in.
* otherwise the MLflow registry: the versions under the ``champion`` and ``challenger``
  aliases of ``FRAUDOPS_MODEL_NAME``; their bundle is read from the local copy
  ``$FRAUDOPS_HOME/bundles/<model>/<version>/`` when it exists, else downloaded from
  the ``bundle/`` artifacts of the version's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ChallengerMode = Literal["canary", "shadow", "off"]
OnlineFallback = Literal["reference_mean", "error"]
Device = Literal["cpu", "cuda", "auto"]


def _env(name: str) -> Any:
    """A field read from one shared variable (no serving prefix)."""
    return AliasChoices(name, name.lower())


def _split_list(value: Any) -> Any:
    """``a,b`` or ``["a","b"]`` or a list -> a list of stripped, non-empty strings."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import orjson

            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
            if not isinstance(parsed, list):
                raise ValueError("expected a JSON list")
            return [str(v).strip() for v in parsed if str(v).strip()]
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ServingSettings(BaseSettings):
    """Everything the predictor needs; secrets never come from the repository."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUDOPS_SERVING_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    # ---- shared with the rest of fraudops (same variable names)
    home: Path = Field(default_factory=lambda: Path.cwd() / ".fraudops", validation_alias=_env("FRAUDOPS_HOME"))
    mlflow_tracking_uri: str = Field(default="", validation_alias=_env("FRAUDOPS_MLFLOW_TRACKING_URI"))
    model_name: str = Field(default="fraud-detector", validation_alias=_env("FRAUDOPS_MODEL_NAME"))
    redis_url: SecretStr = Field(default=SecretStr(""), validation_alias=_env("FRAUDOPS_REDIS_URL"))
    feast_project: str = Field(default="fraudops", validation_alias=_env("FRAUDOPS_FEAST_PROJECT"))
    canary_share: float = Field(default=0.05, ge=0.0, le=1.0, validation_alias=_env("FRAUDOPS_CANARY__SHARE"))

    # ---- where bundles come from
    bundle_dir: Path | None = None
    challenger_dir: Path | None = None
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    # Read $FRAUDOPS_HOME/bundles/<model>/<version>/ when present instead of downloading.
    use_local_bundles: bool = True
    poll_interval_s: float = Field(default=30.0, gt=0)
    # Retry delays while nothing could be loaded yet (registry down at start).
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    # Refuse a bundle of another feature schema version ("" = pin the first one loaded).
    feature_schema_version: str = ""
    # Refuse a bundle whose feature names differ (empty = pin the first one loaded).
    expected_feature_names: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # ---- traffic
    challenger_mode: ChallengerMode = "canary"
    # Salt of the sticky split: every replica with the same salt sends a card to the same variant.
    canary_salt: str = "fraudops-canary"

    # ---- access
    require_api_key: bool = False
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # ---- input limits
    max_batch_rows: int = Field(default=1_000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1_024)

    # ---- online card features (Feast's Redis online store)
    online_features: Annotated[list[str], NoDecode] = Field(default_factory=list)
    online_view: str = "card_profile"
    online_entity_key: str = "card_id"
    online_timeout_ms: float = Field(default=10.0, gt=0)
    online_fallback: OnlineFallback = "reference_mean"
    # After this many consecutive store failures, skip the store for `online_cooldown_s`.
    online_breaker_failures: int = Field(default=5, ge=1)
    online_cooldown_s: float = Field(default=5.0, gt=0)

    # ---- prediction log
    log_enabled: bool = True
    log_uri: str = ""  # "" = $FRAUDOPS_HOME/prediction_log; any PyArrow filesystem URL in production
    log_flush_interval_s: float = Field(default=5.0, gt=0)
    # Under load, flushes come every `log_flush_rows` rows, and each has a fixed cost (a file,
    # its Arrow table, a Parquet footer): at 20,000 rows a flush, batch traffic cost 0.3-0.4 us
    # more server CPU a row than at 100,000 (6-12 % fewer rows/s), for about 100 MB less memory.
    log_flush_rows: int = Field(default=100_000, ge=1)
    log_max_pending_rows: int = Field(default=2_000_000, ge=1)
    # The flushing thread runs at SCHED_IDLE (Linux; false: at `log_thread_nice`): a flush takes
    # a core only when nothing else wants it, so it never delays a request.
    log_thread_idle: bool = True
    # The niceness of the thread that flushes in its place when it falls behind (every core
    # busy), or of the flushing thread itself when `log_thread_idle` is false: above the request
    # threads' 0, so that requests preempt a flush; 0 turns it off. Not much above: on busy cores
    # a thread at 10 gets a tenth of its fair share, and with every core saturated (one worker
    # per core) the flushes fell behind, 400,000-580,000 rows each instead of 100,000.
    log_thread_nice: int = Field(default=5, ge=0, le=19)

    # ---- inference
    device: Device = "cpu"
    # Batches of at most this many rows run on the event loop (a few tens of microseconds,
    # less than a hop to a worker thread costs); larger ones run in a worker thread. With
    # several workers, each worker's default is the batch maximum (see server.worker_defaults).
    inline_max_rows: int = Field(default=32, ge=0)
    # Single rows (/predict) that arrive in one turn of the event loop are scored together,
    # in one model call of at most this many rows (micro-batching without a timer: nothing
    # waits for company). 1 scores each row by itself.
    coalesce_max_rows: int = Field(default=32, ge=1)
    # ...after this many polls of the event loop for I/O: with 2, the requests read in the
    # next poll (which arrived while the loop was busy) join the call; 1 scores the rows of
    # one poll. Each poll costs microseconds when nothing else is waiting.
    coalesce_polls: int = Field(default=2, ge=1, le=8)
    # Threads of the batch session (0 = one per core; with several workers, each worker's
    # default is its share of the cores); single rows always use one.
    batch_threads: int = Field(default=0, ge=0)
    inference_workers: int = Field(default=2, ge=1)

    # ---- server (used by `fraudops serve` / `fraudops-serve` and the container)
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    # Worker processes on SO_REUSEPORT sockets under a supervisor (server.Supervisor).
    workers: int = Field(default=1, ge=1)
    graceful_timeout_s: float = Field(default=20.0, gt=0)

    @field_validator("expected_feature_names", "online_features", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, list):
            return value
        return _split_list(value)

    @model_validator(mode="after")
    def _check(self) -> ServingSettings:
        if self.require_api_key and not self.api_keys:
            raise ValueError("FRAUDOPS_SERVING_REQUIRE_API_KEY is true but FRAUDOPS_SERVING_API_KEYS is empty")
        if self.challenger_dir is not None and self.bundle_dir is None:
            raise ValueError("FRAUDOPS_SERVING_CHALLENGER_DIR needs FRAUDOPS_SERVING_BUNDLE_DIR (the champion) too")
        for key in (*self.api_keys, *self.admin_api_keys):
            if len(key.get_secret_value()) < 16:
                raise ValueError("API keys must be at least 16 characters long")
        return self

    # ---- derived
    @property
    def source_kind(self) -> Literal["directory", "registry"]:
        return "directory" if self.bundle_dir is not None else "registry"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def bundles_dir(self) -> Path:
        return self.home / "bundles"

    @property
    def cache_dir(self) -> Path:
        return self.home / "serving_cache"

    @property
    def prediction_log_uri(self) -> str:
        return self.log_uri or str(self.home / "prediction_log")

    @property
    def online_enabled(self) -> bool:
        return bool(self.redis_url.get_secret_value()) and bool(self.online_features)
