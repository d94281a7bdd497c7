"""``fraudops serve``: start the predictor (the same server as the serving container).

The predictor is the separately installable ``fraudops-serving`` package; it reads
feature names, order and threshold from the bundle manifest and imports nothing of
``fraudops``. This command bridges the two: it passes this build's settings (home,
tracking URI, model name, Redis) and feature schema (version, names, the online card
features of the Feast ``card_profile`` view) to the predictor through its environment,
so that a bundle trained on another schema is refused, then runs ``fraudops-serve``.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from fraudops.cli._common import fail, settings


def serving_environment(bundle_dir: Path | None = None, challenger_dir: Path | None = None) -> dict[str, str]:
    """The ``FRAUDOPS_*`` variables that configure the predictor like this installation.

    Variables already set in the environment win (an operator's override).
    """
    from fraudops import schema
    from fraudops.features import definitions

    s = settings()
    env = {
        "FRAUDOPS_HOME": str(s.home),
        "FRAUDOPS_MLFLOW_TRACKING_URI": s.tracking_uri,
        "FRAUDOPS_MODEL_NAME": s.model_name,
        "FRAUDOPS_CANARY__SHARE": str(s.canary.share),
        "FRAUDOPS_FEAST_PROJECT": s.feast_project,
        "FRAUDOPS_SERVING_FEATURE_SCHEMA_VERSION": schema.FEATURE_SCHEMA_VERSION,
        "FRAUDOPS_SERVING_EXPECTED_FEATURE_NAMES": ",".join(schema.FEATURE_NAMES),
        "FRAUDOPS_SERVING_ONLINE_VIEW": definitions.CARD_VIEW,
        "FRAUDOPS_SERVING_ONLINE_ENTITY_KEY": schema.CARD_ID,
        "FRAUDOPS_SERVING_ONLINE_FEATURES": ",".join(schema.CARD_FEATURE_NAMES),
    }
    if s.prediction_log_uri:
        env["FRAUDOPS_SERVING_LOG_URI"] = s.prediction_log_uri
    if s.redis_url:
        env["FRAUDOPS_REDIS_URL"] = s.redis_url
    if bundle_dir is not None:
        env["FRAUDOPS_SERVING_BUNDLE_DIR"] = str(bundle_dir)
    if challenger_dir is not None:
        env["FRAUDOPS_SERVING_CHALLENGER_DIR"] = str(challenger_dir)
    return {k: v for k, v in env.items() if k not in os.environ or k.endswith("_DIR")}


def serve(
    host: str = typer.Option("0.0.0.0", envvar="FRAUDOPS_SERVING_HOST", help="Interface to listen on."),
    port: int = typer.Option(8000, envvar="FRAUDOPS_SERVING_PORT", help="Port."),
    workers: int = typer.Option(1, envvar="FRAUDOPS_SERVING_WORKERS", help="Worker processes."),
    bundle_dir: str | None = typer.Option(
        None, "--bundle-dir", help="Serve this champion bundle directory instead of the MLflow registry aliases."
    ),
    challenger_dir: str | None = typer.Option(None, "--challenger-dir", help="Challenger bundle (with --bundle-dir)."),
    log_level: str = typer.Option("info", help="Log level of the predictor."),
) -> None:
    """Start the predictor: champion (and challenger) from the registry, or from --bundle-dir."""
    try:
        from fraudops_serving import server
    except ImportError:
        fail(
            "the predictor (package fraudops-serving) is not installed: "
            "pip install -c constraints.txt -e './serving[registry]'"
        )
    if challenger_dir is not None and bundle_dir is None:
        fail("--challenger-dir needs --bundle-dir (the champion)")
    champion = Path(bundle_dir).resolve() if bundle_dir else None
    challenger = Path(challenger_dir).resolve() if challenger_dir else None
    os.environ.update(serving_environment(champion, challenger))
    argv = ["--host", host, "--port", str(port), "--workers", str(workers), "--log-level", log_level]
    server.main(argv)
