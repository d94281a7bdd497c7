from pathlib import Path

import pytest
from pydantic import ValidationError

from fraudops.settings import Settings


def test_local_profile_keeps_all_state_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    for p in (s.warehouse_path, s.snapshots_dir, s.feast_dir, s.gx_dir, s.bundles_dir, s.prediction_log_dir):
        assert tmp_path in p.parents
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.dvc_remote.startswith(str(tmp_path))


def test_environment_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FRAUDOPS_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUDOPS_GATE__AUC_FLOOR", "0.9")
    monkeypatch.setenv("FRAUDOPS_MODEL_NAME", "fraud-eu")
    s = Settings()
    assert s.home == tmp_path and s.gate.auc_floor == 0.9 and s.model_name == "fraud-eu"


def test_production_refuses_missing_endpoints_and_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDOPS_PROFILE", "production")
    monkeypatch.setenv("FRAUDOPS_SNOWFLAKE__ACCOUNT", "acme-xy123")
    monkeypatch.setenv("FRAUDOPS_SNOWFLAKE__PASSWORD", "changeme")
    with pytest.raises(ValidationError) as err:
        Settings()
    text = str(err.value)
    assert "PASSWORD" in text and "FRAUDOPS_REDIS_URL" in text and "MLFLOW_TRACKING_URI" in text


def test_production_with_everything_set(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "FRAUDOPS_PROFILE": "production",
        "FRAUDOPS_SNOWFLAKE__ACCOUNT": "acme-xy123",
        "FRAUDOPS_SNOWFLAKE__PASSWORD": "s3cr3t-from-vault",
        "FRAUDOPS_REDIS_URL": "redis://redis:6379/0",
        "FRAUDOPS_MLFLOW_TRACKING_URI": "postgresql://mlflow@db/mlflow",
        "FRAUDOPS_DVC_REMOTE_URL": "s3://fraudops-data/dvc",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.profile == "production" and s.dvc_remote == "s3://fraudops-data/dvc"
    assert "s3cr3t" not in repr(s)  # secrets never show up in logs or reprs


def test_prediction_log_location_is_shared_by_the_predictor_and_the_monitors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fraudops.cli.serve import serving_environment
    from fraudops.settings import get_settings

    assert Settings(home=tmp_path).prediction_log_root == tmp_path / "prediction_log"
    monkeypatch.setenv("FRAUDOPS_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUDOPS_PREDICTION_LOG_URI", "s3://fraud-logs/prediction_log")
    monkeypatch.delenv("FRAUDOPS_SERVING_LOG_URI", raising=False)
    get_settings.cache_clear()
    try:
        assert get_settings().prediction_log_root == "s3://fraud-logs/prediction_log"
        assert serving_environment()["FRAUDOPS_SERVING_LOG_URI"] == "s3://fraud-logs/prediction_log"
    finally:
        get_settings.cache_clear()
