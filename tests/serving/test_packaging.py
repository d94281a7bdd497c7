"""The predictor installs and runs on its own: no fraudops, torch, pandas, Airflow or training code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx

from fraudops import schema

from .conftest import features, free_port

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("fraudops", "torch", "pandas", "airflow", "mlflow", "feast", "sklearn", "great_expectations", "evidently")


def test_serving_dependencies_are_small() -> None:
    meta = tomllib.loads((ROOT / "serving" / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("[")[0].split("=")[0].strip().lower() for d in meta["dependencies"]}
    assert names.isdisjoint({"fraudops", "torch", "pandas", "apache-airflow", "mlflow", "feast", "scikit-learn"})
    assert meta["optional-dependencies"]["registry"] == ["mlflow-skinny>=3.1,<4"]


def test_the_app_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import fraudops_serving.app, fraudops_serving.server, fraudops_serving.sources, fraudops_serving.arrow\n"
        "app = fraudops_serving.app.create_app(fraudops_serving.settings.ServingSettings(bundle_dir='/nonexistent'))\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "", f"the predictor imported {out.stdout.strip()}"


def test_fraudops_serve_starts_the_same_server(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    from fraudops.cli.serve import serving_environment

    bundle = make_bundle("4")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env["FRAUDOPS_HOME"] = str(tmp_path / "home")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("fraudops")),
                "serve",
                "--bundle-dir",
                str(bundle),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, log.read_text()[-2000:]
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": features(0)})
        assert r.status_code == 200 and r.json()["model_version"] == "4"
        info = httpx.get(f"http://127.0.0.1:{port}/model").json()
        assert info["online_features"]["features"] == list(schema.CARD_FEATURE_NAMES)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Application shutdown complete" in log.read_text()
    # The environment it passes pins this build's feature schema.
    got = serving_environment(bundle)
    assert got["FRAUDOPS_SERVING_FEATURE_SCHEMA_VERSION"] == schema.FEATURE_SCHEMA_VERSION
    assert got["FRAUDOPS_SERVING_EXPECTED_FEATURE_NAMES"].split(",") == list(schema.FEATURE_NAMES)
    assert got["FRAUDOPS_SERVING_BUNDLE_DIR"] == str(bundle)


_CHURN = """
import resource, sys
from fraudops_serving.server import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
def churn():
    for _ in range(200):  # a half-megabyte request body read in two chunks, and a copy of it
        body = b"".join([bytes(300_000), bytes(300_000)])
        copy = bytearray(body)
        del body, copy
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_the_server_keeps_freed_memory_so_large_bodies_reuse_their_pages() -> None:
    """Without the allocator setting every half-megabyte body faults in fresh pages; with it
    (what the server sets at start), the same work faults in none once warm. An operator's
    own MALLOC_*_THRESHOLD_ wins: the server then changes nothing."""

    def run(mode: str, **env: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True, env={**os.environ, **env}
        ).stdout.split()
        return out[0], int(out[1])

    plain, tuned = run("plain"), run("tuned")
    assert plain[1] > 10_000, plain  # pages faulted in again and again
    assert tuned == ("True", 0)
    assert run("tuned", MALLOC_TRIM_THRESHOLD_="131072")[0] == "False"
