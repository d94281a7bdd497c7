"""``fraudops train`` unchanged under a multi-process launcher (two CPU processes, DDP over gloo).

On GPUs the launcher is ``accelerate launch --multi_gpu --num_processes N``; both set the
same environment (``WORLD_SIZE``, ``RANK``...) that Accelerate reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fraudops.data.generate import generate_transactions

pytestmark = pytest.mark.slow


def test_two_processes_train_one_run(fraudops_home: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from fraudops.settings import get_settings

    data = tmp_path / "train.parquet"
    pq.write_table(generate_transactions(20_000, seed=9), data)
    fraudops = Path(sys.executable).with_name("fraudops")
    summary = tmp_path / "summary.json"
    env = {**os.environ, "FRAUDOPS_HOME": str(fraudops_home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(fraudops),
         "train", "--data", str(data), "--epochs", "2", "--summary", str(summary)],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(summary.read_text())  # written once, by the main process
    cfg = get_settings()
    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)  # not the process-wide one
    runs = client.search_runs([out["experiment_id"]])
    assert len(runs) == 1  # one run, not one per process
    assert runs[0].data.params["num_processes"] == "2"
    assert len(client.search_model_versions("name = 'fraud-detector'")) == 1
    assert out["epochs_run"] <= 2
