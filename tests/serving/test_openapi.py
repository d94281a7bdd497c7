"""The OpenAPI schema is complete, has examples, and a property-based schemathesis run finds no server error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import ADMIN_KEY, NAMES


def _build_app() -> Any:
    """An app on a real bundle, built at import: schemathesis collects one test per operation."""
    import atexit
    import shutil
    import tempfile

    from fraudops_serving.app import create_app
    from fraudops_serving.devtools import write_bundle
    from fraudops_serving.manager import ModelManager
    from fraudops_serving.metrics import Metrics
    from fraudops_serving.settings import ServingSettings
    from fraudops_serving.sources import make_source

    root = Path(tempfile.mkdtemp(prefix="fraudops-openapi-"))
    atexit.register(shutil.rmtree, root, True)  # built at import, so no fixture can remove it
    bundle = write_bundle(root / "bundle", NAMES, version="1")
    s = ServingSettings(
        home=root / "home",
        bundle_dir=bundle,
        admin_api_keys=[SecretStr(ADMIN_KEY)],
        max_batch_rows=20,
        log_enabled=False,
    )
    metrics = Metrics()
    manager = ModelManager(s, make_source(s), metrics)
    manager.refresh()
    return create_app(s, manager=manager, metrics=metrics, background=False)


APP = _build_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture
def served_app() -> Any:
    return APP


# One test per operation, with its own id: schemathesis's `schema.parametrize()` gives every
# operation the same node id, and pytest-xdist (`make test` runs two workers) would run one.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_server_error_and_responses_follow_the_schema(operation: Any) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        # Every check but one: a schema-valid feature value (any finite float32) can still be
        # too extreme for this particular model to give a finite probability; the API then
        # answers a specific 422 (unscorable_input), which "positive data acceptance" counts
        # against it. That limit belongs to the model, not to a JSON schema.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    run()


def test_schema_is_complete_with_examples(served_app: Any) -> None:
    from fastapi.testclient import TestClient

    doc = TestClient(served_app).get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {"/predict", "/predict/batch", "/health", "/ready", "/model", "/metrics", "/admin/reload"}
    for path, methods in paths.items():
        for method, op in methods.items():
            assert op.get("summary") and op.get("description"), (path, method)
            assert "200" in op["responses"], (path, method)
    predict = paths["/predict"]["post"]
    assert {"400", "413", "415", "422", "503"} <= set(predict["responses"])
    body = predict["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"by_name", "in_order"}
    assert list(body["examples"]["by_name"]["value"]["features"]) == NAMES
    request = doc["components"]["schemas"]["PredictRequest"]
    by_name, in_order = request["properties"]["features"]["oneOf"]
    assert by_name["required"] == NAMES and by_name["additionalProperties"] is False
    assert in_order["minItems"] == in_order["maxItems"] == len(NAMES)
    # A number is valid when it becomes a finite float32: float32's maximum as it prints is in.
    bound = in_order["items"]["exclusiveMaximum"]
    assert in_order["items"]["exclusiveMinimum"] == -bound and by_name["properties"][NAMES[0]] == in_order["items"]
    assert (
        np.float32(3.4028235e38) == np.finfo(np.float32).max and float(np.finfo(np.float32).max) < 3.4028235e38 < bound
    )
    with np.errstate(over="ignore"):  # the overflow is the point
        assert np.isinf(np.float64(bound).astype(np.float32))
    assert np.isfinite(np.nextafter(bound, 0).astype(np.float32))
    assert "application/vnd.apache.arrow.stream" in paths["/predict/batch"]["post"]["requestBody"]["content"]
    assert paths["/admin/reload"]["post"]["security"] == [{"ApiKeyHeader": []}]
    assert doc["components"]["schemas"]["PredictResponse"]["examples"]
