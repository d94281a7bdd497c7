"""``fraudops lifecycle`` end to end, twice: the second model is gated against the first.

Real everything (DuckDB, Great Expectations, DVC, Feast, PyTorch, MLflow on SQLite, ONNX
Runtime), run as a user runs it: the installed command in its own process. Small data and
two epochs keep it short; the gate's floor is lowered so that a 2-epoch model passes (the
floor itself is tested in the unit and integration tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _lifecycle(home: Path, out: Path, seed: int) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("fraudops")
    env = {**os.environ, "FRAUDOPS_HOME": str(home), "FRAUDOPS_PROFILE": "local", "FRAUDOPS_GATE__AUC_FLOOR": "0.6"}
    for var in ("FRAUDOPS_MLFLOW_TRACKING_URI", "FRAUDOPS_MODEL_NAME", "FRAUDOPS_DUCKDB_PATH"):
        env.pop(var, None)
    proc = subprocess.run(
        [str(exe), "lifecycle", "--rows", "30000", "--days", "21", "--epochs", "2", "--seed", str(seed),
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_lifecycle_twice_the_second_model_is_gated_against_the_first(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _lifecycle(home, tmp_path / "first.json", seed=1)
    assert first["validate"]["success"] is True
    assert first["train"]["model_version"] == "1"
    assert first["promote"]["passed"] is True and first["promote"]["aliases_after"] == {"champion": "1"}
    bundle = Path(first["export"]["bundle_path"])
    assert (bundle / "model.onnx").is_file() and (bundle / "manifest.json").is_file()
    assert first["export"]["parity_max_abs_diff"] <= 1e-5
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["data_version"] == first["snapshot"]["version"] and manifest["model_version"] == "1"

    second = _lifecycle(home, tmp_path / "second.json", seed=2)
    assert second["snapshot"]["version"] != first["snapshot"]["version"]  # new data, new version
    assert second["train"]["model_version"] == "2"
    assert "champion v1" in second["promote"]["reason"]  # gated against the first model
    assert second["promote"]["aliases_after"] == {"champion": "1", "challenger": "2"}
