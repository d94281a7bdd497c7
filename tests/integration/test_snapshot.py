"""DVC snapshots: the version is the hash; any version checks out again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fraudops.data.generate import generate_transactions
from fraudops.data.snapshot import SnapshotNotFound, checkout_snapshot, create_snapshot, list_snapshots
from fraudops.settings import get_settings


def test_same_data_same_version_and_checkout_from_remote(fraudops_home: Path) -> None:
    settings = get_settings()
    first = generate_transactions(5_000, seed=1)
    second = generate_transactions(5_000, seed=2)
    a = create_snapshot(first, settings)
    assert create_snapshot(first, settings).version == a.version
    b = create_snapshot(second, settings)
    assert b.version != a.version
    assert {s.version for s in list_snapshots(settings)} == {a.version, b.version}
    assert len(a.version) == 32

    # Lose the workspace copy and the local cache: the remote still has it.
    a.path.unlink()
    shutil.rmtree(settings.snapshots_dir / ".dvc" / "cache")
    restored = checkout_snapshot(a.version, settings)
    assert pq.read_table(restored).equals(first)
    assert any(Path(settings.dvc_remote).rglob("*")), "the remote holds the data"


def test_unknown_version(fraudops_home: Path) -> None:
    with pytest.raises(SnapshotNotFound, match="deadbeef"):
        checkout_snapshot("deadbeef", get_settings())
