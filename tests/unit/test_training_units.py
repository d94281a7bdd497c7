"""The pure parts of training: threshold tuning, metrics, scaling, data checks, splits, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudops import schema
from fraudops.data.generate import generate_transactions
from fraudops.training.config import TrainConfig, parse_hidden
from fraudops.training.data import TrainingDataError, data_fingerprint, load_training_set, split_by_time
from fraudops.training.evaluate import auc_roc, average_precision, binary_metrics, confusion, tune_threshold
from fraudops.training.scaling import Scaler, fit_scaler, log_mask_from_schema, signed_log1p

# --- threshold tuning -----------------------------------------------------------------


def test_threshold_max_f1_on_a_hand_checked_case() -> None:
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    choice = tune_threshold(y, s)
    # Cut at 0.5 flags 4 rows with 3 frauds: P 3/4, R 1, F1 6/7 -- the best of all cuts.
    assert choice.threshold == pytest.approx(0.5)
    assert choice.precision == pytest.approx(0.75)
    assert choice.recall == pytest.approx(1.0)
    assert choice.f1 == pytest.approx(6 / 7)
    assert choice.strategy == "max_f1"


def test_threshold_is_the_best_f1_of_every_possible_cut() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.03).astype(float)
    s = np.round(rng.random(4000) * 0.7 + 0.4 * y, 3)  # rounding makes ties
    choice = tune_threshold(y, s)
    best = max(binary_metrics(y, s, t)["f1"] for t in np.unique(s))
    assert choice.f1 == pytest.approx(best)
    assert binary_metrics(y, s, choice.threshold)["f1"] == pytest.approx(choice.f1)


def test_threshold_min_precision_takes_best_recall_at_that_precision() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(5000) < 0.05).astype(float)
    s = rng.random(5000) + 0.8 * y
    choice = tune_threshold(y, s, min_precision=0.9)
    assert choice.precision >= 0.9
    for t in np.unique(s):
        m = binary_metrics(y, s, t)
        if m["precision"] >= 0.9:
            assert m["recall"] <= choice.recall + 1e-12
    assert choice.strategy == "min_precision_0.9"


def test_threshold_refuses_one_class_and_bad_input() -> None:
    with pytest.raises(ValueError, match="both classes"):
        tune_threshold(np.zeros(10), np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="finite"):
        tune_threshold(np.array([0, 1]), np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="differ in length"):
        tune_threshold(np.array([0, 1, 1]), np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="min_precision"):
        tune_threshold(np.array([0, 1]), np.array([0.2, 0.3]), min_precision=1.5)


def test_auc_and_average_precision_equal_sklearn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(11)
    for _ in range(5):
        y = (rng.random(3000) < 0.02).astype(float)
        y[:2] = [0, 1]
        s = np.round(rng.random(3000) + 0.3 * y, 2)
        assert auc_roc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_confusion_matches_metrics() -> None:
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.95])
    cm = confusion(y, s, 0.5)
    assert cm.tolist() == [[1, 1], [1, 2]]
    m = binary_metrics(y, s, 0.5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)


# --- scaling --------------------------------------------------------------------------


def test_scaler_is_fitted_on_the_train_split_only() -> None:
    rng = np.random.default_rng(0)
    n_f = schema.N_FEATURES
    train = rng.normal(0.0, 1.0, (5000, n_f)).astype(np.float32)
    later = rng.normal(50.0, 10.0, (5000, n_f)).astype(np.float32)  # val/test rows, shifted
    mask = np.zeros(n_f, dtype=bool)
    scaler = fit_scaler(train, mask)
    np.testing.assert_allclose(scaler.mean, train.astype(np.float64).mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(scaler.std, train.astype(np.float64).std(axis=0), rtol=1e-5)
    z_train = scaler.transform(train)
    np.testing.assert_allclose(z_train.mean(axis=0), 0.0, atol=1e-4)
    # The later rows keep their shift: nothing of theirs leaked into the statistics.
    assert scaler.transform(later).mean() > 30


def test_scaler_in_a_real_split_uses_train_rows(tmp_path: Path) -> None:
    path = tmp_path / "ts.parquet"
    pq.write_table(generate_transactions(6000, seed=4), path)
    splits = split_by_time(load_training_set(path))
    scaler = fit_scaler(splits.train.X)
    expected = fit_scaler(splits.train.X.copy())
    whole = fit_scaler(np.concatenate([splits.train.X, splits.val.X, splits.test.X]))
    np.testing.assert_array_equal(scaler.mean, expected.mean)
    assert not np.allclose(scaler.mean, whole.mean)


def test_heavy_tailed_features_get_signed_log1p() -> None:
    mask = log_mask_from_schema()
    by_name = dict(zip(schema.FEATURE_NAMES, mask, strict=True))
    assert by_name["amount"] and by_name["txn_count_24h"] and by_name["distance_from_home_km"]
    assert not by_name["merchant_risk_score"]  # bounded score
    assert not by_name["hour_of_day"]  # bounded time
    assert not by_name["latent_v01"]  # already Gaussian
    x = np.array([-1e6, -1.0, 0.0, 1.0, 1e6])
    np.testing.assert_allclose(signed_log1p(x), np.sign(x) * np.log1p(np.abs(x)))
    assert np.all(np.isfinite(signed_log1p(np.array([np.finfo(np.float32).max], dtype=np.float32))))


def test_constant_column_scales_by_one_and_transform_checks_shape() -> None:
    X = np.ones((100, 3), dtype=np.float32)
    X[:, 1] = np.arange(100)
    scaler = fit_scaler(X, np.zeros(3, dtype=bool))
    assert scaler.std[0] == 1.0
    assert np.all(np.isfinite(scaler.transform(X)))
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        scaler.transform(np.ones((4, 2), dtype=np.float32))
    d = scaler.to_dict()
    assert d["feature_schema_version"] == schema.FEATURE_SCHEMA_VERSION
    assert isinstance(scaler, Scaler)


# --- data loading and splits ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_table() -> pa.Table:
    return generate_transactions(4000, seed=8)


def test_load_and_split_by_time(tmp_path: Path, small_table: pa.Table) -> None:
    # Shuffle the rows on disk: the loader must restore time order.
    perm = np.random.default_rng(1).permutation(small_table.num_rows)
    path = tmp_path / "shuffled.parquet"
    pq.write_table(small_table.take(pa.array(perm)), path)
    data = load_training_set(path)
    assert data.X.shape == (4000, schema.N_FEATURES)
    assert data.X.dtype == np.float32
    assert np.all(np.diff(data.event_time_us) >= 0)
    splits = split_by_time(data, val_fraction=0.2, test_fraction=0.2)
    assert (splits.train.n_rows, splits.val.n_rows, splits.test.n_rows) == (2400, 800, 800)
    assert splits.train.event_time_us.max() <= splits.val.event_time_us.min()
    assert splits.val.event_time_us.max() <= splits.test.event_time_us.min()
    desc = splits.describe()
    assert desc["train_rows"] == 2400 and desc["test_start"] >= desc["val_end"]


def test_missing_column_is_named(tmp_path: Path, small_table: pa.Table) -> None:
    path = tmp_path / "missing.parquet"
    pq.write_table(small_table.drop_columns(["amount", "latent_v05"]), path)
    with pytest.raises(TrainingDataError, match=r"lacks 2 column.*amount.*latent_v05"):
        load_training_set(path)


def test_nan_and_bad_labels_are_refused(tmp_path: Path, small_table: pa.Table) -> None:
    amount = small_table.column("amount").to_numpy().copy()
    amount[[3, 7]] = np.nan
    bad = small_table.set_column(small_table.schema.get_field_index("amount"), "amount", pa.array(amount))
    pq.write_table(bad, tmp_path / "nan.parquet")
    with pytest.raises(TrainingDataError, match="amount: 2 NaN/infinite"):
        load_training_set(tmp_path / "nan.parquet")

    labels = small_table.column(schema.LABEL).to_numpy().copy()
    labels[0] = 2
    bad = small_table.set_column(
        small_table.schema.get_field_index(schema.LABEL), schema.LABEL, pa.array(labels, pa.int8())
    )
    pq.write_table(bad, tmp_path / "labels.parquet")
    with pytest.raises(TrainingDataError, match="must be 0 or 1"):
        load_training_set(tmp_path / "labels.parquet")


def test_unreadable_and_small_inputs(tmp_path: Path, small_table: pa.Table) -> None:
    with pytest.raises(TrainingDataError, match="not found"):
        load_training_set(tmp_path / "nope.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(TrainingDataError, match="not a readable Parquet"):
        load_training_set(tmp_path / "text.parquet")
    pq.write_table(small_table.slice(0, 500), tmp_path / "small.parquet")
    with pytest.raises(TrainingDataError, match="at least 1,000"):
        load_training_set(tmp_path / "small.parquet")


def test_split_without_both_classes_is_refused(tmp_path: Path, small_table: pa.Table) -> None:
    zeros = pa.array(np.zeros(small_table.num_rows, dtype=np.int8))
    clean = small_table.set_column(small_table.schema.get_field_index(schema.LABEL), schema.LABEL, zeros)
    pq.write_table(clean, tmp_path / "clean.parquet")
    with pytest.raises(TrainingDataError, match="needs both classes"):
        split_by_time(load_training_set(tmp_path / "clean.parquet"))


def test_fingerprint_is_the_file_md5(tmp_path: Path) -> None:
    import hashlib

    p = tmp_path / "f.bin"
    p.write_bytes(b"fraud" * 1000)
    assert data_fingerprint(p) == hashlib.md5(b"fraud" * 1000).hexdigest()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x")
    assert len(data_fingerprint(tmp_path / "d")) == 32


# --- configuration ------------------------------------------------------------------------


def test_config_validation_names_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(epochs=0, learning_rate=-1, mixed_precision="fp8")  # type: ignore[arg-type]
    msg = str(info.value)
    assert "epochs" in msg and "learning_rate" in msg and "mixed_precision" in msg
    params = TrainConfig().params()
    assert params["weight_decay"] == 1e-4 and params["grad_clip_norm"] == 1.0
    assert params["hidden"] == "256,128"
    assert parse_hidden("64, 32") == (64, 32)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_hidden("64,x")


def test_bare_postgres_uri_gets_the_installed_driver() -> None:
    import importlib.util

    from fraudops.training.tracking import normalize_tracking_uri

    assert normalize_tracking_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert normalize_tracking_uri("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    bare = normalize_tracking_uri("postgresql://u@h:5432/db")
    if importlib.util.find_spec("psycopg") is None:
        assert bare == "postgresql+psycopg2://u@h:5432/db"
        assert normalize_tracking_uri("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    else:
        assert bare == "postgresql://u@h:5432/db"


def test_redact_uri_hides_passwords() -> None:
    from fraudops.training.tracking import redact_uri

    assert redact_uri("postgresql://mlflow:s3cret@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert redact_uri("postgresql://u@h/db") == "postgresql://u@h/db"
