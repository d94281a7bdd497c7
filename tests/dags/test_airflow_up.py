"""`fraudops airflow up`: the operator's Airflow answers, lists the DAGs without import
errors, logs in with the printed login, and carries the fraudops plugin (menu links,
drift reports behind the login); the MLflow UI answers too."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

DAG_IDS = {"fraud_feature_materialization", "fraud_training", "fraud_drift_monitoring", "fraud_canary_rollout"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(pids: dict[str, int]) -> None:
    for pid in pids.values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 60
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_up_serves_the_dags_the_login_and_the_plugin(fraudops_home: Path) -> None:
    import httpx

    port, mlflow_port = _free_port(), _free_port()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("fraudops")), "airflow", "up", "--port", str(port),
         "--mlflow-port", str(mlflow_port), "--detach", "--timeout", "400"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info: dict[str, Any] = json.loads(proc.stdout)
    try:
        base = info["airflow_ui"]
        assert base == f"http://localhost:{port}"
        login = info["login"]
        assert f"login {login['user']} / {login['password']}" in proc.stderr
        token = httpx.post(f"{base}/auth/token", json={"username": login["user"], "password": login["password"]})
        assert token.status_code in (200, 201), token.text
        auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert httpx.post(f"{base}/auth/token", json={"username": "admin", "password": "wrong"}).status_code == 401

        deadline, found = time.monotonic() + 240, set()
        while time.monotonic() < deadline:  # the DAG processor parses the folder shortly after start
            dags = httpx.get(f"{base}/api/v2/dags", headers=auth, params={"limit": 100}).json()
            found = {d["dag_id"] for d in dags.get("dags", [])}
            if found >= DAG_IDS:
                break
            time.sleep(3)
        assert found >= DAG_IDS, f"DAGs seen by the UI: {found}"
        errors = httpx.get(f"{base}/api/v2/importErrors", headers=auth).json()
        assert errors["total_entries"] == 0, errors

        plugins = httpx.get(f"{base}/api/v2/plugins", headers=auth).json()["plugins"]
        (ours,) = [p for p in plugins if p["name"] == "fraudops"]
        links = {v["name"]: v["href"] for v in ours["external_views"]}
        assert links["MLflow"] == f"http://localhost:{mlflow_port}"
        assert links["Predictor API"].endswith("/docs")
        report = f"{base}/fraudops/drift/2026-01-01/report.html"
        assert httpx.get(report).status_code == 401  # reports only for logged-in users
        missing = httpx.get(report, headers=auth)
        assert missing.status_code == 404 and "has the drift DAG run that day" in missing.text
        assert httpx.get(f"{info['mlflow_ui']}/health").status_code == 200
    finally:
        _stop(info["pids"])
