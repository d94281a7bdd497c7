"""Shared fixtures: every test gets its own FRAUDOPS_HOME, nothing leaks between tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def fraudops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated state directory, with the cached settings reset around the test."""
    from fraudops.settings import get_settings

    home = tmp_path / "fraudops-home"
    monkeypatch.setenv("FRAUDOPS_HOME", str(home))
    monkeypatch.setenv("FRAUDOPS_PROFILE", "local")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
