"""Endpoints: scoring, batch, health/ready/model/metrics, strict 4xx validation, API keys."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import ADMIN_KEY, NAMES, SCORING_KEY, features


@pytest.fixture
def served(make_bundle: Callable[..., Path], app_factory: Callable[..., Any]) -> tuple[Any, Path]:
    bundle = make_bundle("3", threshold=0.2)
    client, _app = app_factory(bundle, admin_api_keys=ADMIN_KEY)
    return client, bundle


def _raw_probability(bundle: Path, row: dict[str, float]) -> float:
    x = np.array([[row[n] for n in NAMES]], dtype=np.float32)
    return float(ort.InferenceSession(str(bundle / "model.onnx")).run(None, {"features": x})[0].reshape(-1)[0])


def test_predict_by_name_and_in_order_give_onnx_runtimes_answer(served: tuple[Any, Path]) -> None:
    client, bundle = served
    row = features(1)
    expected = _raw_probability(bundle, row)
    r = client.post("/predict", json={"features": row, "transaction_id": "t-1", "card_id": 77, "request_id": "req-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["probability"] == pytest.approx(expected, rel=1e-6)
    assert body["decision"] == int(expected >= 0.2)
    assert body | {"probability": 0} == {
        "request_id": "req-1",
        "probability": 0,
        "decision": int(expected >= 0.2),
        "threshold": 0.2,
        "model_name": "fraud-detector",
        "model_version": "3",
        "variant": "champion",
        "feature_source": "request",
    }
    r2 = client.post("/predict", json={"features": [row[n] for n in NAMES]})
    assert r2.status_code == 200
    assert r2.json()["probability"] == pytest.approx(expected, rel=1e-6)
    assert len(r2.json()["request_id"]) == 32  # generated


def test_batch_scores_every_row_in_order(served: tuple[Any, Path]) -> None:
    client, bundle = served
    rows = [features(i) for i in range(20)]
    payload = {
        "batch_id": "b-1",
        "transactions": [
            {"features": r if i % 2 else [r[n] for n in NAMES], "transaction_id": f"t-{i}", "card_id": i}
            for i, r in enumerate(rows)
        ],
    }
    r = client.post("/predict/batch", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 20 and body["batch_id"] == "b-1"
    x = np.array([[row[n] for n in NAMES] for row in rows], dtype=np.float32)
    raw = ort.InferenceSession(str(bundle / "model.onnx")).run(None, {"features": x})[0].reshape(-1)
    got = [p["probability"] for p in body["predictions"]]
    np.testing.assert_allclose(got, raw, rtol=1e-6)
    assert [p["transaction_id"] for p in body["predictions"]] == [f"t-{i}" for i in range(20)]
    assert [p["request_id"] for p in body["predictions"]] == [f"b-1-{i}" for i in range(20)]
    assert {p["variant"] for p in body["predictions"]} == {"champion"}


def test_batch_accepts_an_arrow_stream(served: tuple[Any, Path]) -> None:
    import pyarrow as pa

    client, bundle = served
    rows = [features(i) for i in range(50)]
    table = pa.table({n: pa.array([r[n] for r in rows], pa.float32()) for n in NAMES})
    table = table.append_column("card_id", pa.array(range(50), pa.int64()))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    r = client.post(
        "/predict/batch",
        content=sink.getvalue().to_pybytes(),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert r.status_code == 200, r.text
    x = np.array([[row[n] for n in NAMES] for row in rows], dtype=np.float32)
    raw = ort.InferenceSession(str(bundle / "model.onnx")).run(None, {"features": x})[0].reshape(-1)
    np.testing.assert_allclose([p["probability"] for p in r.json()["predictions"]], raw, rtol=1e-6)
    # An Arrow answer when asked for.
    r = client.post(
        "/predict/batch",
        content=sink.getvalue().to_pybytes(),
        headers={
            "content-type": "application/vnd.apache.arrow.stream",
            "accept": "application/vnd.apache.arrow.stream",
        },
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    answer = pa.ipc.open_stream(r.content).read_all()
    np.testing.assert_allclose(answer.column("probability").to_numpy(), raw, rtol=1e-6)
    assert answer.column("variant").to_pylist() == ["champion"] * 50
    assert answer.schema.metadata[b"model_name"] == b"fraud-detector"
    bad = pa.table({"amount": pa.array(["x"])})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, bad.schema) as writer:
        writer.write_table(bad)
    r = client.post(
        "/predict/batch",
        content=sink.getvalue().to_pybytes(),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert r.status_code == 422 and r.json()["code"] == "missing_features"
    r = client.post(
        "/predict/batch", content=b"not arrow", headers={"content-type": "application/vnd.apache.arrow.stream"}
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_arrow"


def _arrow(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=7):  # several record batches when longer than 7 rows
            writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize(
    "layout", ["float32 in manifest order", "reversed column order", "float64 and int64 columns", "record batches"]
)
def test_every_arrow_layout_scores_and_logs_the_same_rows(
    layout: str, make_bundle: Callable[..., Path], app_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """The strided fast path (float32, one record batch) and the general path agree, ids included."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    bundle = make_bundle("4")
    client, app = app_factory(bundle)
    n = 5 if layout != "record batches" else 20
    x = np.random.default_rng(7).normal(0, 1, (n, len(NAMES))).astype(np.float32)
    if layout == "float64 and int64 columns":
        x[:, 1] = np.arange(n)  # whole numbers, sent as int64
    cols: dict[str, Any] = {name: pa.array(x[:, j], pa.float32()) for j, name in enumerate(NAMES)}
    if layout == "float64 and int64 columns":
        cols[NAMES[0]] = pa.array(x[:, 0].astype(np.float64), pa.float64())
        cols[NAMES[1]] = pa.array(x[:, 1].astype(np.int64), pa.int64())
    names = list(reversed(NAMES)) if layout == "reversed column order" else NAMES
    table = pa.table({name: cols[name] for name in names})
    table = table.append_column("request_id", pa.array([f"r-{i}" if i % 2 else None for i in range(n)], pa.string()))
    table = table.append_column("transaction_id", pa.array([f"t-{i}" for i in range(n)], pa.string()))
    body = _arrow(table) if layout == "record batches" else _arrow(table.combine_chunks())
    r = client.post(
        "/predict/batch",
        content=body,
        headers={
            "content-type": "application/vnd.apache.arrow.stream",
            "accept": "application/vnd.apache.arrow.stream",
        },
    )
    assert r.status_code == 200, r.text
    answer = pa.ipc.open_stream(r.content).read_all()
    raw = ort.InferenceSession(str(bundle / "model.onnx")).run(None, {"features": x})[0].reshape(-1)
    np.testing.assert_allclose(answer.column("probability").to_numpy(), raw, rtol=1e-6)
    batch_id = answer.schema.metadata[b"batch_id"].decode()
    expected_ids = [f"r-{i}" if i % 2 else f"{batch_id}-{i}" for i in range(n)]
    assert answer.column("request_id").to_pylist() == expected_ids
    assert answer.column("transaction_id").to_pylist() == [f"t-{i}" for i in range(n)]
    assert answer.column("feature_source").to_pylist() == ["request"] * n
    rt = app.state.runtime
    rt.predlog.flush()
    logged = ds.dataset(rt.predlog.root, format="parquet", partitioning="hive").to_table()
    assert logged.column("request_id").to_pylist() == expected_ids
    np.testing.assert_array_equal(np.column_stack([logged.column(c).to_numpy() for c in NAMES]), x)
    np.testing.assert_allclose(logged.column("probability").to_numpy(), raw, rtol=1e-6)


def test_arrow_values_beyond_float32_nan_or_null_are_refused(served: tuple[Any, Path]) -> None:
    import pyarrow as pa

    client, _ = served
    x = np.zeros((3, len(NAMES)), dtype=np.float64)
    ctype = {"content-type": "application/vnd.apache.arrow.stream"}
    for value, typ in ((1e300, pa.float64()), (float("nan"), pa.float32()), (None, pa.float32())):
        cols = {name: pa.array(x[:, j], typ) for j, name in enumerate(NAMES)}
        cols[NAMES[3]] = pa.array([0.0, value, 0.0], typ)
        r = client.post("/predict/batch", content=_arrow(pa.table(cols)), headers=ctype)
        assert r.status_code == 422, r.text
        assert repr(NAMES[3]) in r.json()["detail"], r.text
        assert r.json()["code"] in ("out_of_range", "invalid_value")


def test_operations_endpoints(served: tuple[Any, Path]) -> None:
    client, _ = served
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json() == {"ready": True, "model_name": "fraud-detector", "model_version": "3"}
    info = client.get("/model").json()
    assert info["champion"]["model_version"] == "3"
    assert info["champion"]["manifest"]["feature_names"] == NAMES
    assert info["challenger"] is None and info["source"] == "directory"
    assert info["traffic"] == {"challenger_mode": "canary", "canary_share": 0.05, "sticky_by": "card_id"}
    client.post("/predict", json={"features": features(0)})
    client.post("/predict", json={"features": {"amount": "x"}})
    text = client.get("/metrics").text
    assert 'fraudops_requests_total{endpoint="predict",status="200"} 1.0' in text
    assert 'fraudops_served_model_info{model_name="fraud-detector",model_version="3",variant="champion"} 1.0' in text
    assert 'fraudops_requests_total{endpoint="predict",status="422"} 1.0' in text
    assert 'fraudops_request_latency_seconds_count{endpoint="predict"} 1.0' in text
    assert 'fraudops_request_latency_seconds_bucket{endpoint="predict",le="+Inf"} 1.0' in text
    assert 'fraudops_request_latency_seconds_bucket{endpoint="predict_batch",le="+Inf"} 0.0' in text
    assert 'fraudops_errors_total{endpoint="predict",reason="missing_features"} 1.0' in text
    assert "fraudops_predictions_total" in text


def _bad_cases() -> list[tuple[str, Any, int, str]]:
    row = features(0)
    lst = [row[n] for n in NAMES]
    return [
        ("wrong count", {"features": lst[:-1]}, 422, "wrong_feature_count"),
        ("too many values", {"features": [*lst, 1.0]}, 422, "wrong_feature_count"),
        ("unknown name", {"features": {**row, "bogus": 1.0}}, 422, "unknown_features"),
        (
            "renamed",
            {"features": {**{k: v for k, v in row.items() if k != "amount"}, "amountt": 1.0}},
            422,
            "unknown_features",
        ),
        ("missing name", {"features": {k: v for k, v in row.items() if k != "amount"}}, 422, "missing_features"),
        ("string value", {"features": {**row, "amount": "12.5"}}, 422, "invalid_value"),
        ("boolean value", {"features": {**row, "is_night": True}}, 422, "invalid_value"),
        ("null value", {"features": {**row, "amount": None}}, 422, "invalid_value"),
        ("nested value", {"features": {**row, "amount": [1]}}, 422, "invalid_value"),
        ("string in array", {"features": [*lst[:-1], "x"]}, 422, "invalid_value"),
        ("beyond float32", {"features": {**row, "amount": 1e39}}, 422, "out_of_range"),
        ("beyond float32 in array", {"features": [*lst[:-1], -1e39]}, 422, "out_of_range"),
        ("features not object", {"features": "all"}, 422, "invalid_features"),
        ("no features", {"card_id": 1}, 422, "missing_features"),
        ("extra field", {"features": row, "debug": True}, 422, "unknown_field"),
        ("card id float", {"features": row, "card_id": 1.5}, 422, "invalid_card_id"),
        ("card id string", {"features": row, "card_id": "12"}, 422, "invalid_card_id"),
        ("card id too big", {"features": row, "card_id": 2**63}, 422, "invalid_card_id"),
        ("card id bool", {"features": row, "card_id": True}, 422, "invalid_card_id"),
        ("long transaction id", {"features": row, "transaction_id": "x" * 129}, 422, "invalid_id"),
        ("empty request id", {"features": row, "request_id": ""}, 422, "invalid_id"),
        ("body is a list", [row], 422, "invalid_body"),
        ("unscorable extremes", {"features": [3e38] * len(NAMES)}, 422, "unscorable_input"),
    ]


def test_json_numbers_become_their_float32_values() -> None:
    from fraudops_serving.inputs import FLT_MAX, InputError, RowParser

    parser = RowParser(NAMES)
    # ints, float32's largest value (exact, and as float32 prints it), a subnormal, a negative zero
    values = [3, FLT_MAX, 3.4028235e38, -FLT_MAX, 1e-45, -0.0, 0.1, *[float(i) for i in range(len(NAMES) - 7)]]
    row, needs_online = parser.features(values, card_id=None)
    assert row.dtype == np.float32 and row.shape == (len(NAMES),) and not needs_online
    np.testing.assert_array_equal(row, np.array(values, dtype=np.float64).astype(np.float32))
    assert np.signbit(row[5]) and row[4] > 0
    with pytest.raises(InputError) as err:
        parser.features([*values[:-1], 3.5e38], card_id=None)
    assert err.value.code == "out_of_range" and repr(NAMES[-1]) in err.value.message


_ID_TEXT = st.text(alphabet=st.sampled_from('ulfeatrs"\\:,[]{} 0'), max_size=24)
_VALUE = st.one_of(st.floats(-1e6, 1e6), st.integers(-1000, 1000), st.booleans())


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A transaction's JSON text in any field order, with ids full of the letters and
    quotes that the boolean pre-check looks for; and whether its features hold a boolean."""
    values = draw(st.lists(_VALUE, min_size=len(NAMES), max_size=len(NAMES)))
    by_name = draw(st.booleans())
    fields: dict[str, Any] = {"features": dict(zip(NAMES, values, strict=True)) if by_name else values}
    for name in draw(st.sets(st.sampled_from(["transaction_id", "request_id", "card_id", "extra"]))):
        fields[name] = draw(st.one_of(_ID_TEXT, st.booleans(), st.integers(0, 99)))
    order = draw(st.permutations(list(fields)))
    return orjson.dumps({k: fields[k] for k in order}), any(type(v) is bool for v in values)


@settings(max_examples=400, deadline=None)
@given(_bodies())
def test_a_boolean_feature_is_refused_whatever_the_bodys_text(case: tuple[bytes, bool]) -> None:
    """``may_hold_bools`` may say yes wrongly (a slower check), never no wrongly."""
    from fraudops_serving.inputs import InputError, RowParser, may_hold_bools

    body, has_bool = case
    if has_bool:
        assert may_hold_bools(body), body
    obj = orjson.loads(body)
    obj.pop("extra", None)
    try:
        RowParser(NAMES).item(obj, bools=may_hold_bools(body))
    except InputError as exc:
        assert not has_bool or exc.code in ("invalid_value", "invalid_card_id", "invalid_id"), exc.message
    else:
        assert not has_bool


def test_the_boolean_pre_check_skips_plain_bodies() -> None:
    from fraudops_serving.inputs import may_hold_bools

    lst = [features(0)[n] for n in NAMES]
    assert not may_hold_bools(orjson.dumps({"features": lst}))
    assert not may_hold_bools(orjson.dumps({"transaction_id": "t-true", "card_id": 7, "features": lst}))
    assert not may_hold_bools(orjson.dumps({"features": lst, "request_id": "r"}))  # by the whole-text search
    assert may_hold_bools(orjson.dumps({"features": [*lst[:-1], False]}))
    assert may_hold_bools(orjson.dumps({"features": [*lst[:-1], True]}))


@pytest.mark.parametrize(("case", "payload", "status", "code"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_gets_a_specific_4xx(
    served: tuple[Any, Path], case: str, payload: Any, status: int, code: str
) -> None:
    client, _ = served
    r = client.post("/predict", content=orjson.dumps(payload), headers={"content-type": "application/json"})
    assert r.status_code == status, (case, r.text)
    body = r.json()
    assert body["code"] == code and body["detail"], body
    # The same item inside a batch names its position.
    if isinstance(payload, dict):
        rb = client.post("/predict/batch", json={"transactions": [{"features": features(1)}, payload]})
        assert rb.status_code == status and rb.json()["code"] == code
        assert "transactions[1]" in rb.json()["detail"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"", {"content-type": "application/json"}, 400, "empty_body"),
        (b'{"features": [1, 2', {"content-type": "application/json"}, 400, "malformed_json"),
        (b'{"features": [NaN]}', {"content-type": "application/json"}, 400, "malformed_json"),
        (b'{"features": [Infinity]}', {"content-type": "application/json"}, 400, "malformed_json"),
        (b'{"features": [1e400]}', {"content-type": "application/json"}, 400, "malformed_json"),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, "malformed_json"),
        (b"features=1", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies(
    served: tuple[Any, Path], body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    client, _ = served
    r = client.post("/predict", content=body, headers=headers)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text


def test_batch_limits(make_bundle: Callable[..., Path], app_factory: Callable[..., Any]) -> None:
    client, _ = app_factory(make_bundle("1"), max_batch_rows=5, max_body_bytes=64 * 1024)
    row = [features(0)[n] for n in NAMES]
    assert client.post("/predict/batch", json={"transactions": []}).json()["code"] == "empty_batch"
    r = client.post("/predict/batch", json={"transactions": [{"features": row}] * 6})
    assert (r.status_code, r.json()["code"]) == (413, "batch_too_large")
    assert client.post("/predict/batch", json={"transactions": [{"features": row}] * 5}).status_code == 200
    r = client.post("/predict/batch", json={"transactions": [{"features": row}] * 5, "extra": 1})
    assert r.json()["code"] == "unknown_field"
    big = b'{"features": [' + b"1.0," * 20_000 + b"1.0]}"
    r = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (413, "body_too_large")

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(100):
            yield b" " * 1024

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (413, "body_too_large")


def test_scoring_key_when_required_and_admin_key_always(
    make_bundle: Callable[..., Path], app_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = app_factory(make_bundle("1"), require_api_key=True, api_keys=SCORING_KEY, admin_api_keys=ADMIN_KEY)
    row = {"features": features(0)}
    assert client.post("/predict", json=row).status_code == 401
    assert client.post("/predict", json=row, headers={"x-api-key": SCORING_KEY[:-1] + "x"}).status_code == 401
    assert client.post("/predict", json=row, headers={"x-api-key": SCORING_KEY}).status_code == 200
    assert client.post("/predict", json=row, headers={"authorization": f"Bearer {SCORING_KEY}"}).status_code == 200
    assert client.post("/predict/batch", json={"transactions": [row]}).status_code == 401
    # Health, readiness and metrics stay open (probes and Prometheus carry no key).
    assert client.get("/ready").status_code == 200 and client.get("/metrics").status_code == 200
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"x-api-key": SCORING_KEY}).status_code == 401
    r = client.post("/admin/reload", headers={"x-api-key": ADMIN_KEY})
    assert r.status_code == 200 and r.json()["outcomes"][0]["action"] == "unchanged"
    logged = caplog.text + client.get("/model").text
    assert SCORING_KEY not in logged and ADMIN_KEY not in logged
    assert client.get("/openapi.json").json()["paths"]["/predict"]["post"]["security"] == [{"ApiKeyHeader": []}]


def test_admin_disabled_without_a_configured_key(
    make_bundle: Callable[..., Path], app_factory: Callable[..., Any]
) -> None:
    client, _ = app_factory(make_bundle("1"))
    r = client.post("/admin/reload", headers={"x-api-key": ADMIN_KEY})
    assert (r.status_code, r.json()["code"]) == (403, "admin_disabled")


def test_settings_refuse_short_keys_and_keys_never_show_in_repr() -> None:
    from pydantic import ValidationError

    from fraudops_serving.settings import ServingSettings

    with pytest.raises(ValidationError, match="at least 16 characters"):
        ServingSettings(api_keys="short")  # type: ignore[arg-type]  # the env form
    with pytest.raises(ValidationError, match="REQUIRE_API_KEY is true but"):
        ServingSettings(require_api_key=True)
    s = ServingSettings(api_keys=f"{SCORING_KEY},{ADMIN_KEY}")  # type: ignore[arg-type]  # the env form
    assert len(s.api_keys) == 2 and SCORING_KEY not in repr(s) and SCORING_KEY not in str(s.model_dump())


def test_not_ready_says_why(tmp_path: Path, app_factory: Callable[..., Any]) -> None:
    empty = tmp_path / "empty-bundle"
    empty.mkdir()
    client, _ = app_factory(empty)
    r = client.get("/ready")
    assert r.status_code == 503
    assert "no bundle in" in r.json()["reason"] and "manifest.json missing" in r.json()["reason"]
    r = client.post("/predict", json={"features": features(0)})
    assert (r.status_code, r.json()["code"]) == (503, "not_ready")
    assert client.get("/health").status_code == 200


def test_latency_histogram_counts_each_request_in_its_bucket() -> None:
    """The scoring endpoints' counts (plain numbers) read as Prometheus counters and a histogram."""
    from prometheus_client import generate_latest

    from fraudops_serving.metrics import Metrics

    m = Metrics()
    for seconds in (0.0004, 0.0005, 0.0012, 0.003, 0.2, 5.0):
        m.scoring.answered(m.predict, seconds)
    m.scoring.answered(m.batch, 0.04)
    m.scoring.failed("predict", 422)
    m.scoring.failed("predict_batch", 500)
    m.scoring.predicted("champion", 7, 2)
    m.scoring.predicted("shadow", 3, 0)
    text = generate_latest(m.registry).decode()
    expected = {"0.0005": 2, "0.001": 2, "0.002": 3, "0.003": 4, "0.1": 4, "0.25": 5, "2.5": 5, "+Inf": 6}
    for le, n in expected.items():
        assert f'fraudops_request_latency_seconds_bucket{{endpoint="predict",le="{le}"}} {n}.0' in text
    assert 'fraudops_request_latency_seconds_sum{endpoint="predict"} 5.2051' in text
    assert 'fraudops_request_latency_seconds_bucket{endpoint="predict_batch",le="0.05"} 1.0' in text
    assert 'fraudops_requests_total{endpoint="predict",status="200"} 6.0' in text
    assert 'fraudops_requests_total{endpoint="predict",status="422"} 1.0' in text
    assert 'fraudops_requests_total{endpoint="predict_batch",status="500"} 1.0' in text
    assert 'fraudops_predictions_total{decision="1",variant="champion"} 2.0' in text
    assert 'fraudops_predictions_total{decision="0",variant="champion"} 5.0' in text
    assert 'fraudops_predictions_total{decision="0",variant="shadow"} 3.0' in text
    assert 'fraudops_predictions_total{decision="1",variant="challenger"} 0.0' in text


def test_generated_request_ids_are_unique_and_a_forked_child_draws_its_own() -> None:
    import os

    from fraudops_serving.app import new_request_id

    ids = {new_request_id() for _ in range(50_000)}
    assert len(ids) == 50_000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id must not be the parent's next one
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child != new_request_id() and child not in ids


@pytest.mark.parametrize("rows", [5, 40], ids=["on the event loop", "in a worker thread"])
def test_a_batch_with_an_unscorable_row_is_refused_whole_and_logs_nothing(served: tuple[Any, Path], rows: int) -> None:
    """Small batches are scored on the event loop, larger ones (above inline_max_rows, 32) in a
    worker thread that also answers and logs: either way one row the model cannot score
    refuses the batch with its position, nothing of it is logged, and the next batch is."""
    import pyarrow.dataset as ds

    client, _ = served
    rt = client.app.state.runtime
    batch = [{"features": features(i)} for i in range(rows)]
    batch[3] = {"features": [3e38] * len(NAMES)}
    r = client.post("/predict/batch", json={"transactions": batch})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unscorable_input" and "transactions[3]" in r.json()["detail"]
    assert rt.predlog.pending_rows == 0
    batch[3] = {"features": features(3)}
    r = client.post("/predict/batch", json={"batch_id": "ok", "transactions": batch})
    assert r.status_code == 200 and r.json()["count"] == rows
    rt.predlog.flush()
    logged = ds.dataset(rt.predlog.root, format="parquet", partitioning="hive").to_table()
    assert sorted(logged.column("request_id").to_pylist()) == sorted(f"ok-{i}" for i in range(rows))
    text = client.get("/metrics").text
    counted = re.findall(r'^fraudops_predictions_total\{decision="[01]",variant="champion"\} (\S+)$', text, re.M)
    assert sum(float(v) for v in counted) == rows  # the refused batch counted no prediction
    assert 'fraudops_errors_total{endpoint="predict_batch",reason="unscorable_input"} 1.0' in text
