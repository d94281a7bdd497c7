"""Deployment files: Kubernetes manifests valid against the schema; images slim, non-root, with a health check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudops import schema

from .conftest import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s" / "predictor"
IMAGES = ROOT / "docker" / "serving"
K8S_VERSION = "1.30.0"


def _docs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_manifest_is_valid_against_the_kubernetes_schema(path: str) -> None:
    import kubernetes_validate

    for doc in yaml.safe_load_all((K8S / path).read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_resource_but_the_example_secret() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kust["resources"]) == files


def test_deployment_probes_resources_and_wiring() -> None:
    docs = _docs()
    dep, svc, hpa, cm = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"], docs["ConfigMap"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["ports"][0]["containerPort"] == 8000
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    graceful = next(int(e["value"]) for e in c["env"] if e["name"] == "FRAUDOPS_SERVING_GRACEFUL_TIMEOUT_S")
    assert pod["terminationGracePeriodSeconds"] > graceful + 5  # preStop sleep + drain + log flush
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    refs = {r.get("configMapRef", r.get("secretRef"))["name"] for r in c["envFrom"]}
    assert refs == {cm["metadata"]["name"], docs["Secret"]["metadata"]["name"]}


def test_configmap_is_a_valid_predictor_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from fraudops_serving.settings import ServingSettings

    cm = _docs()["ConfigMap"]["data"]
    for key, value in cm.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FRAUDOPS_SERVING_API_KEYS", "k" * 32)
    s = ServingSettings()
    assert s.online_features == list(schema.CARD_FEATURE_NAMES)
    assert s.feature_schema_version == schema.FEATURE_SCHEMA_VERSION
    assert s.require_api_key and s.source_kind == "registry" and s.canary_share == 0.05
    fields = {f"FRAUDOPS_SERVING_{n.upper()}" for n in ServingSettings.model_fields}
    shared = {"FRAUDOPS_MODEL_NAME", "FRAUDOPS_MLFLOW_TRACKING_URI", "FRAUDOPS_FEAST_PROJECT", "FRAUDOPS_CANARY__SHARE"}
    assert set(cm) - fields - shared == set(), "unknown variables in the ConfigMap"


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_the_prediction_log_backlog_fits_in_the_memory_limit(tmp_path: Path) -> None:
    """While the log's sink is down, rows pile up to LOG_MAX_PENDING_ROWS: that must fit in the
    pod's memory limit beside the process itself, or the kernel kills the pod instead of the
    log dropping its oldest rows. The bytes a row are measured on a real log holding batches."""
    import numpy as np
    import pyarrow as pa

    from fraudops_serving.predlog import Chunk, PredictionLog
    from fraudops_serving.settings import ServingSettings

    docs = _docs()
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    limit = _bytes(c["resources"]["limits"]["memory"])
    backlog = int(docs["ConfigMap"]["data"].get("FRAUDOPS_SERVING_LOG_MAX_PENDING_ROWS", 0)) or (
        ServingSettings.model_fields["log_max_pending_rows"].default
    )
    names = list(schema.FEATURE_NAMES)
    log = PredictionLog(str(tmp_path), names, flush_interval_s=3600)
    rows, batches = 1000, 40
    x = np.asfortranarray(np.ones((rows, len(names)), dtype=np.float32))
    ids = pa.array([f"{'0' * 32}-{i}" for i in range(rows)])  # a batch id and the row's number
    for _ in range(batches):
        log.append(
            Chunk(
                ids,
                0,
                pa.nulls(rows, pa.string()),
                pa.array(range(rows)),
                "m",
                "1",
                "champion",
                np.zeros(rows, np.float32),
                np.zeros(rows, np.int8),
                1.0,
                x,
            )
        )
    segments = log._sealed + list(log._open.values())
    held = sum(
        sum(a.nbytes for a in (s.features, s.probability, s.decision, s.ts, s.latency))
        + sum(p.nbytes for parts in s.parts for p in parts)
        for s in segments
    )
    per_row = held / (rows * batches)  # segments are preallocated: an upper bound for full ones
    process = 512 << 20  # the predictor's own peak (470 MB measured under batch load, log on)
    assert backlog * per_row + process <= limit, (
        f"{backlog:,} pending rows x {per_row:.0f} bytes + {process >> 20} MiB > limit {limit >> 20} MiB"
    )


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_images_are_slim_non_root_with_a_health_check(name: str) -> None:
    text = (IMAGES / name).read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert all(s.startswith("python:") and s.endswith("-slim") for s in stages), stages
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*/health", text, flags=re.M)
    assert 'ENTRYPOINT ["fraudops-serve"]' in text
    commands = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "torch" not in commands and "pandas" not in commands and "include/" not in commands
    if name.endswith(".gpu"):
        assert "onnxruntime-gpu" in text and "FRAUDOPS_SERVING_DEVICE=cuda" in text
    else:
        assert "FRAUDOPS_SERVING_DEVICE=cpu" in text
    ignore = (IMAGES / f"{name}.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:3] == ["*", "!constraints.txt", "!serving/"]


def test_the_images_health_check_asks_the_port_the_predictor_listens_on(
    make_bundle: Callable[..., Path], live_server: Callable[..., LiveServer]
) -> None:
    """The HEALTHCHECK command, run as the image runs it, against a predictor on another port than 8000."""
    commands = []
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (IMAGES / name).read_text()
        health = text[text.index("HEALTHCHECK") :]
        found = re.search(r"^\s*CMD (\[.*\])\s*$", health, flags=re.M)
        assert found, name
        commands.append(json.loads(found.group(1)))
    assert commands[0] == commands[1] and commands[0][:2] == ["python", "-c"]
    server = live_server({"FRAUDOPS_SERVING_BUNDLE_DIR": str(make_bundle("1"))})
    assert server.port != 8000

    def check(port: int) -> int:
        env = {**os.environ, "FRAUDOPS_SERVING_PORT": str(port)}
        done = subprocess.run([sys.executable, *commands[0][1:]], check=False, env=env, capture_output=True, timeout=30)
        return done.returncode

    assert check(server.port) == 0
    assert check(free_port()) != 0  # nothing listens there: unhealthy
