"""MLflow plumbing: the store, the experiment, lineage and registration.

The tracking store is ``settings.tracking_uri`` (SQLite under ``FRAUDOPS_HOME`` on the
embedded default, PostgreSQL in production), and artifacts go to
``settings.artifact_root`` (local files, or S3). MLflow only honours an artifact root
when the experiment is created, so :func:`ensure_experiment` creates it with that
location explicitly; otherwise a SQLite store would drop artifacts in ``./mlruns`` of
whatever directory the command ran from.
"""

from __future__ import annotations

import logging
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from fraudops.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "fraudops"
# Packages whose versions decide the trained model or its export.
_TRACKED_PACKAGES = (
    "fraudops",
    "torch",
    "accelerate",
    "numpy",
    "pyarrow",
    "mlflow",
    "onnx",
    "onnxruntime",
    "onnxscript",
)


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached (database down, wrong URI, no access)."""


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def normalize_tracking_uri(uri: str) -> str:
    """Give a bare PostgreSQL URI the driver this package installs.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, while the ``train`` extra ships
    psycopg2 (``psycopg2-binary``): without this, the natural URI
    ``postgresql://user@host/db`` fails with "No module named 'psycopg'". An explicit
    driver (``postgresql+psycopg://``) is left alone, as is a bare URI when psycopg 3 is
    installed.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return uri
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None or importlib.util.find_spec("psycopg2") is None:
        return uri
    return f"postgresql+psycopg2://{rest}"


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow (tracking and registry) at the configured store and return a client."""
    import mlflow
    from mlflow import MlflowClient

    if settings.profile == "local":
        settings.ensure_home()
    uri = normalize_tracking_uri(settings.tracking_uri)
    # Progress bars on stderr would garble the CLI's output and the task logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        # Opening the store plus one cheap call: a store that is down fails here, with a
        # clear message, rather than after an hour of training.
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # sqlalchemy, requests and MLflow errors alike
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingUnavailable(
            f"the MLflow tracking store {redact_uri(settings.tracking_uri)} is unreachable: {reason} "
            "(check FRAUDOPS_MLFLOW_TRACKING_URI and that the database or server is up)"
        ) from exc
    return client


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str) -> str:
    """The id of experiment ``name``, created with ``artifact_location`` if it does not exist.

    Safe when two runs create it at once (the loser reads the winner's experiment).
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise RuntimeError(
            f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}) or choose another name"
        )
    if exp.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        log.warning(
            "experiment %r stores artifacts at %s, not at the configured %s (it was created before)",
            name,
            exp.artifact_location,
            artifact_location,
        )
    return str(exp.experiment_id)


def git_commit(cwd: str | Path | None = None) -> tuple[str, bool]:
    """The commit of the code that trains, and whether it has uncommitted changes.

    ``FRAUDOPS_GIT_COMMIT`` wins (a training image has no ``.git``; its build passes the
    commit in). Otherwise git is asked in ``cwd``, by default the directory of the
    installed package (the repository, for an editable install), so the answer does
    not depend on where the command runs. ``("unknown", False)`` when neither works.
    """
    env = os.environ.get("FRAUDOPS_GIT_COMMIT", "").strip()
    if env:
        return env, False
    if cwd is None:
        import fraudops

        cwd = Path(fraudops.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit or "unknown", bool(status.strip())


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape training and export."""
    out: dict[str, str] = {}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    import platform

    out["python"] = platform.python_version()
    return out


def register_version(model_uri: str, name: str, tags: dict[str, Any], description: str = "") -> str:
    """Register ``model_uri`` as a new version of ``name`` (created if needed); returns the version.

    Registration only: moving aliases is the promotion gate's job.
    """
    import mlflow
    from mlflow import MlflowClient

    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    if description:
        MlflowClient().update_model_version(name, mv.version, description=description)
    return str(mv.version)


def resolve_version(client: MlflowClient, name: str, ref: str | None) -> str:
    """A version number from ``ref``: a number, an alias (``challenger``), or None = the newest version."""
    from mlflow.exceptions import MlflowException

    if ref is None or ref in ("", "latest"):
        versions = client.search_model_versions(f"name = '{_quoted(name)}'")
        if not versions:
            raise LookupError(f"registered model {name!r} has no versions; run `fraudops train` first")
        return str(max(int(v.version) for v in versions))
    if ref.isdigit():
        try:
            client.get_model_version(name, ref)
        except MlflowException:
            raise LookupError(f"{name!r} has no version {ref}") from None
        return ref
    try:
        return str(client.get_model_version_by_alias(name, ref).version)
    except MlflowException:
        raise LookupError(f"{name!r} has no version {ref!r} (not a number nor a known alias)") from None


def _quoted(value: str) -> str:
    # MLflow's filter grammar quotes with single quotes; a quote in a model name is refused.
    if "'" in value:
        raise ValueError(f"model name must not contain a quote: {value!r}")
    return value
