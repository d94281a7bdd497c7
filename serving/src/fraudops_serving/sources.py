"""Where bundles come from: a directory, or the MLflow Model Registry by alias.

A source answers two questions: what does an alias point at now (:meth:`resolve`, cheap,
called on every poll) and where are that candidate's files (:meth:`fetch`, called only
when the candidate differs from what is served). ``resolve`` raises
:class:`SourceUnavailable` when it cannot tell (registry down), and returns ``None``
when the alias is not set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fraudops_serving.bundle import fingerprint
from fraudops_serving.settings import ServingSettings

log = logging.getLogger(__name__)


class SourceUnavailable(RuntimeError):
    """The source cannot say what an alias points at right now (the message says why)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """What an alias points at: ``key`` identifies the content, ``label`` is for humans."""

    alias: str
    key: str
    label: str
    version: str | None = None
    run_id: str | None = None


class Source(Protocol):
    kind: str

    def resolve(self, alias: str) -> Candidate | None: ...

    def fetch(self, candidate: Candidate) -> contextlib.AbstractContextManager[list[tuple[str, Path]]]: ...


class DirectorySource:
    """Bundles in fixed directories, one per alias; a new bundle is noticed by its fingerprint."""

    kind = "directory"

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def resolve(self, alias: str) -> Candidate | None:
        path = self.paths.get(alias)
        if path is None:
            return None
        if not (path / "manifest.json").exists():
            raise SourceUnavailable(f"no bundle in {path} (manifest.json missing)")
        return Candidate(alias=alias, key=fingerprint(path), label=str(path))

    @contextlib.contextmanager
    def fetch(self, candidate: Candidate) -> Iterator[list[tuple[str, Path]]]:
        yield [(candidate.label, self.paths[candidate.alias])]


class RegistrySource:
    """The versions under the aliases of one registered model in MLflow.

    The bundle of a version is read from ``<bundles_dir>/<model>/<version>/`` when that
    copy exists (no download), else from the ``bundle/`` artifacts of the version's run.
    When the local copy is refused, the run's artifacts are tried next.
    """

    kind = "registry"

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.tracking_uri = settings.tracking_uri
        self._client: Any = None
        # Fail fast instead of MLflow's default minutes of retries: we retry on our own schedule.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    def _mlflow(self) -> Any:
        if self._client is None:
            try:
                from mlflow import MlflowClient
            except ImportError as exc:
                raise SourceUnavailable(
                    "the MLflow client is not installed: pip install 'fraudops-serving[registry]', "
                    "or serve a directory with FRAUDOPS_SERVING_BUNDLE_DIR"
                ) from exc
            uri = self.tracking_uri
            if uri.startswith("sqlite:///"):
                # MLflow would create an empty store at a missing path: that is a wrong path, not a registry.
                db = Path(uri.removeprefix("sqlite:///"))
                if not db.exists():
                    raise SourceUnavailable(f"no MLflow store at {db} (FRAUDOPS_MLFLOW_TRACKING_URI={uri})")
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def resolve(self, alias: str) -> Candidate | None:
        try:
            client = self._mlflow()
            mv = client.get_model_version_by_alias(self.model_name, alias)
        except SourceUnavailable:
            raise
        except Exception as exc:
            code = getattr(exc, "error_code", "")
            text = str(exc)
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or "not found" in text.lower():
                return None
            self._client = None  # reconnect next time
            raise SourceUnavailable(
                f"registry {_redact(self.tracking_uri)} unreachable: {type(exc).__name__}: {text[:300]}"
            ) from exc
        version = str(mv.version)
        return Candidate(
            alias=alias,
            key=f"{self.model_name}/{version}/{mv.run_id}",
            label=f"models:/{self.model_name}@{alias} (version {version})",
            version=version,
            run_id=mv.run_id,
        )

    @contextlib.contextmanager
    def fetch(self, candidate: Candidate) -> Iterator[list[tuple[str, Path]]]:
        """Places to try in order: the local copy, then a download of the run's ``bundle/``."""
        places: list[tuple[str, Path]] = []
        local = self.settings.bundles_dir / self.model_name / str(candidate.version)
        if self.settings.use_local_bundles and local.is_dir():
            places.append((f"{candidate.label} from {local}", local))
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="download-", dir=self.settings.cache_dir))
        try:
            yield _LazyPlaces(places, self, candidate, tmp)
        finally:
            # ONNX Runtime holds the graph in memory: the downloaded files are not needed after loading.
            shutil.rmtree(tmp, ignore_errors=True)

    def download(self, candidate: Candidate, dst: Path) -> Path:
        try:
            import mlflow.artifacts

            path = mlflow.artifacts.download_artifacts(
                run_id=candidate.run_id, artifact_path="bundle", dst_path=str(dst), tracking_uri=self.tracking_uri
            )
        except Exception as exc:
            raise SourceUnavailable(
                f"cannot download bundle/ of run {candidate.run_id}: {type(exc).__name__}: {exc}"
            ) from exc
        return Path(path)


class _LazyPlaces(list[tuple[str, Path]]):
    """The local copy first; the download happens only if the loader asks for the next place."""

    def __init__(self, places: list[tuple[str, Path]], source: RegistrySource, candidate: Candidate, tmp: Path) -> None:
        super().__init__(places)
        self._source, self._candidate, self._tmp = source, candidate, tmp
        self._downloaded = False

    def __iter__(self) -> Iterator[tuple[str, Path]]:
        yield from list.__iter__(self)
        if not self._downloaded:
            self._downloaded = True
            path = self._source.download(self._candidate, self._tmp)
            yield (f"{self._candidate.label} from run {self._candidate.run_id} artifacts bundle/", path)


def _redact(uri: str) -> str:
    """A URI without its password."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri


def make_source(settings: ServingSettings) -> DirectorySource | RegistrySource:
    """The source the settings choose."""
    if settings.bundle_dir is not None:
        paths = {settings.champion_alias: settings.bundle_dir}
        if settings.challenger_dir is not None:
            paths[settings.challenger_alias] = settings.challenger_dir
        return DirectorySource(paths)
    return RegistrySource(settings)
