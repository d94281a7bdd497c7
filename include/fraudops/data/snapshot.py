"""Versioned training snapshots with DVC.

A snapshot is the training window written as Parquet and tracked by DVC. Its version
is DVC's content hash (md5) of the file: the same data gives the same version, and any
version can be checked out again, from the local cache or pulled from the remote (a
local directory on the embedded default, S3 in production: ``FRAUDOPS_DVC_REMOTE_URL``).

Layout under ``settings.snapshots_dir`` (a DVC repository without git)::

    .dvc/                      DVC config and cache
    versions/<md5>/training.parquet.dvc   one pointer per version (small, kept)
    versions/<md5>/training.parquet       the data (checked out on demand)
    versions/<md5>/snapshot.json          rows, window, creation time
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fraudops import schema

if TYPE_CHECKING:
    import pyarrow as pa

    from fraudops.settings import Settings

log = logging.getLogger(__name__)

DATA_FILE = "training.parquet"
_REMOTE = "storage"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a snapshot is: its version (the DVC md5) and where its data lies."""

    version: str
    path: Path
    rows: int
    fraud_rows: int
    start: str | None
    end: str | None
    created_at: str
    feature_schema_version: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


class SnapshotNotFound(LookupError):
    """No snapshot with that version exists in this repository or its remote."""


@contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    # DVC resolves some paths against the working directory.
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _repo(settings: Settings) -> Any:
    """Open (creating on first use) the DVC repository and its default remote."""
    from dvc.repo import Repo

    root = settings.snapshots_dir
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".dvc").is_dir():
        with contextlib.redirect_stdout(sys.stderr):  # DVC prints a banner; keep stdout clean
            Repo.init(str(root), no_scm=True)
        log.info("initialized DVC repository at %s", root)
    remote = settings.dvc_remote
    if "://" not in remote:
        Path(remote).mkdir(parents=True, exist_ok=True)
    repo = Repo(str(root))
    with repo.config.edit() as conf:
        conf["core"]["remote"] = _REMOTE
        conf["core"]["autostage"] = False
        conf["remote"][_REMOTE] = {"url": remote}
        conf["core"]["analytics"] = False
    return Repo(str(root))


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Deterministic Parquet: same table, same bytes, same DVC hash."""
    import pyarrow.parquet as pq

    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=3,
        row_group_size=256 * 1024,
        write_statistics=True,
        store_schema=True,
    )


def _md5_of(dvc_file: Path) -> str:
    import yaml

    meta = yaml.safe_load(dvc_file.read_text())
    return str(meta["outs"][0]["md5"])


def create_snapshot(
    table: pa.Table,
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    push: bool = True,
) -> SnapshotInfo:
    """Write ``table`` as a DVC-tracked Parquet snapshot and return its version.

    Idempotent: snapshotting the same data again returns the existing version.
    """
    repo = _repo(settings)
    versions = settings.snapshots_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=versions))
    try:
        data = staging / DATA_FILE
        _write_parquet(table, data)
        with _in_dir(settings.snapshots_dir):
            repo.add([str(data)])
        version = _md5_of(staging / f"{DATA_FILE}.dvc")
        final = versions / version
        if final.exists():
            log.info("snapshot %s exists already: same data, same version", version)
        else:
            fraud = int(table.column(schema.LABEL).to_numpy().sum()) if schema.LABEL in table.column_names else 0
            info = SnapshotInfo(
                version=version,
                path=final / DATA_FILE,
                rows=table.num_rows,
                fraud_rows=fraud,
                start=start.isoformat() if start else None,
                end=end.isoformat() if end else None,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                feature_schema_version=schema.FEATURE_SCHEMA_VERSION,
            )
            (staging / "snapshot.json").write_bytes(orjson.dumps(info.to_dict(), option=orjson.OPT_INDENT_2))
            staging.rename(final)
            staging = final  # nothing left to clean
        if push:
            with _in_dir(settings.snapshots_dir):
                _repo(settings).push(targets=[str(final / f"{DATA_FILE}.dvc")])
        return describe_snapshot(version, settings)
    finally:
        if staging.exists() and staging.name.startswith("staging-"):
            shutil.rmtree(staging, ignore_errors=True)


def describe_snapshot(version: str, settings: Settings) -> SnapshotInfo:
    meta = settings.snapshots_dir / "versions" / version / "snapshot.json"
    if not meta.is_file():
        raise SnapshotNotFound(f"no snapshot with version {version!r} under {settings.snapshots_dir}")
    raw = orjson.loads(meta.read_bytes())
    raw["path"] = settings.snapshots_dir / "versions" / version / DATA_FILE
    return SnapshotInfo(**raw)


def list_snapshots(settings: Settings) -> list[SnapshotInfo]:
    root = settings.snapshots_dir / "versions"
    if not root.is_dir():
        return []
    infos = [describe_snapshot(p.name, settings) for p in root.iterdir() if (p / "snapshot.json").is_file()]
    return sorted(infos, key=lambda i: i.created_at)


def checkout_snapshot(version: str, settings: Settings) -> Path:
    """Make the data of ``version`` present in the workspace (cache first, then the remote)."""
    info = describe_snapshot(version, settings)
    dvc_file = info.path.with_name(f"{DATA_FILE}.dvc")
    repo = _repo(settings)
    with _in_dir(settings.snapshots_dir):
        try:
            repo.checkout(targets=[str(dvc_file)], force=True)
        except Exception as exc:  # not in the local cache: fetch it from the remote
            log.info("snapshot %s not in the local cache (%s); pulling from the remote", version, exc)
            repo.pull(targets=[str(dvc_file)], force=True)
    if not info.path.is_file():
        raise SnapshotNotFound(f"snapshot {version} could not be restored from cache or remote")
    actual = _md5_of(dvc_file)
    if actual != version:
        raise RuntimeError(f"snapshot pointer for {version} names {actual}: the repository is inconsistent")
    return info.path
