"""The OpenAPI schema: written out, because the scoring handlers parse bodies themselves.

Request schemas are built from the served manifest (every feature by name, the exact
count for the array form, the float32 range), so the schema a client reads is the
contract the handler enforces. Until a champion is loaded the schema is generic and not
cached; afterwards it is built once (the feature names are pinned for the process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from fraudops_serving.inputs import FLT_OVERFLOW, INT64_MAX, INT64_MIN, MAX_ID_LENGTH

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.routing import BaseRoute

    from fraudops_serving.app import Runtime

DESCRIPTION = """Scores card transactions with the promoted fraud model (ONNX Runtime).

* `POST /predict` scores one transaction, `POST /predict/batch` many (JSON, or an Arrow IPC stream).
* Features are sent by name (or as an array in the manifest's order: see `GET /model`).
  Card-level features may be left out when a `card_id` is given and online features are on:
  they are read from the online store.
* Every answer says which model version and variant (champion, challenger) answered.
* Errors are JSON `{"detail": "...", "code": "..."}` with a 4xx status for anything wrong with the request.
* Scoring may require an API key (`X-API-Key` header, or `Authorization: Bearer`); admin endpoints always do.
"""

TAGS = [
    {"name": "scoring", "description": "Fraud probability of transactions."},
    {"name": "operations", "description": "Health, readiness, served model, metrics."},
    {"name": "admin", "description": "Operator actions; an admin API key is required."},
]

PREDICT = (
    "Scores one transaction. `decision` is 1 when `probability >= threshold` (the bundle's tuned threshold). "
    "The variant is sticky by `card_id`: during a canary, the same card always meets the same model."
)
BATCH = (
    'Scores up to `FRAUDOPS_SERVING_MAX_BATCH_ROWS` transactions. JSON: `{"transactions": [...]}` with items as '
    "for `/predict`. For bulk scoring, send an Arrow IPC stream (`application/vnd.apache.arrow.stream`) with one "
    "numeric column per feature name and optional `card_id`, `transaction_id`, `request_id` columns, and ask for an "
    "Arrow answer with `Accept: application/vnd.apache.arrow.stream`."
)

FeatureSource = Literal["request", "online_store", "fallback"]
Variant = Literal["champion", "challenger"]


class PredictResponse(BaseModel):
    request_id: str = Field(description="The request's id (given, or generated); the prediction log's key.")
    probability: float = Field(ge=0, le=1, description="Fraud probability.")
    decision: Literal[0, 1] = Field(description="1 when probability >= threshold.")
    threshold: float = Field(ge=0, le=1)
    model_name: str
    model_version: str
    variant: Variant
    feature_source: FeatureSource = Field(
        description="Where the card features came from: the request, the online store, or the fallback "
        "(training means)."
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "request_id": "5f0c8a9e2b7d4c3f9a1e6b2d8c4f7a10",
                    "probability": 0.0132,
                    "decision": 0,
                    "threshold": 0.83,
                    "model_name": "fraud-detector",
                    "model_version": "3",
                    "variant": "champion",
                    "feature_source": "request",
                }
            ]
        }
    }


class BatchPrediction(BaseModel):
    request_id: str
    transaction_id: str | None
    probability: float = Field(ge=0, le=1)
    decision: Literal[0, 1]
    model_version: str
    variant: Variant
    feature_source: FeatureSource


class BatchResponse(BaseModel):
    batch_id: str
    model_name: str
    count: int
    threshold: float = Field(description="The champion's threshold (each row's decision uses its own model's).")
    predictions: list[BatchPrediction]


class ErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong, naming the field.")
    code: str = Field(description="Machine-readable reason, e.g. missing_features, invalid_value, body_too_large.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"detail": "features: feature 'amount' must be a number, got a string", "code": "invalid_value"}
            ]
        }
    }


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    pid: int = Field(description="The answering process (with several workers, which one answered).")


class Ready(BaseModel):
    ready: bool
    model_name: str | None = None
    model_version: str | None = None
    reason: str | None = None


class Outcome(BaseModel):
    alias: str
    action: str = Field(description="swapped, unchanged, refused, still_refused, unset, removed or unavailable")
    detail: str
    version: str | None


class ReloadResponse(BaseModel):
    outcomes: list[Outcome]
    serving: dict[str, dict[str, str]]


class ModelStatus(BaseModel):
    ready: bool
    reason: str
    source: Literal["directory", "registry"]
    champion: dict[str, Any] | None = Field(description="Served champion: version, threshold, sha256, manifest.")
    challenger: dict[str, Any] | None
    refused: dict[str, Any]
    last_refresh: str | None
    last_error: str
    history: list[dict[str, Any]]
    traffic: dict[str, Any]
    online_features: dict[str, Any]
    micro_batching: dict[str, Any] = Field(
        description="Single rows scored together (those read in `polls` polls of the event loop): enabled, "
        "max_rows, polls, calls, rows, mean_rows_per_call."
    )


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed body (not JSON / not an Arrow stream, empty).",
        401: "Missing or wrong API key.",
        403: "Admin endpoints disabled (no admin key configured).",
        409: "A bundle was refused; the previous one keeps serving.",
        413: "Body or batch too large.",
        415: "Unsupported content type.",
        422: "Invalid transaction: wrong or missing features, non-numeric or out-of-range values, bad ids, "
        "or values so extreme that the model gives no finite probability (unscorable_input).",
        503: "Not ready (no model loaded), or the online store is down and the fallback is off.",
    }
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


PREDICT_RESPONSES = {
    200: {"model": PredictResponse, "description": "The score."},
    **_errors(400, 401, 413, 415, 422, 503),
}
BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": BatchResponse,
        "description": "One score per transaction, in order. With `Accept: application/vnd.apache.arrow.stream`, "
        "an Arrow IPC stream with the columns of `predictions` (batch_id, model_name, threshold in its metadata).",
        "content": {"application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **_errors(400, 401, 413, 415, 422, 503),
}
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"model": Health, "description": "Alive."}}
READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Ready, "description": "A checked champion is served."},
    503: {"model": Ready, "description": "Not ready; `reason` says why (registry down, alias unset, bundle refused)."},
}
MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ModelStatus, "description": "Served models and their manifests."}
}
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
RELOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ReloadResponse, "description": "Reloaded (or nothing changed)."},
    **_errors(401, 403, 409),
}
PREDICT_EXAMPLES: dict[str, Any] = {}
BATCH_EXAMPLES: dict[str, Any] = {}


def body(name: str, examples: dict[str, Any], *, arrow: bool = False) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body of component ``name`` (examples added at build time)."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
    if arrow:
        content["application/vnd.apache.arrow.stream"] = {
            "schema": {"type": "string", "format": "binary"},
        }
    return {"requestBody": {"required": True, "content": content}}


def _number() -> dict[str, Any]:
    # What becomes a finite float32: below the magnitude that rounds to infinity.
    return {"type": "number", "exclusiveMinimum": -FLT_OVERFLOW, "exclusiveMaximum": FLT_OVERFLOW}


def request_schemas(names: list[str] | None, online: list[str], online_enabled: bool) -> dict[str, Any]:
    """JSON schemas of ``PredictRequest`` and ``BatchRequest`` for the served feature names."""
    if names:
        required = [n for n in names if not (online_enabled and n in online)]
        by_name: dict[str, Any] = {
            "type": "object",
            "title": "FeaturesByName",
            "description": "Every feature of the manifest by name"
            + (
                " (card features may be omitted when card_id is given: they come from the online store)."
                if online_enabled
                else "."
            ),
            "properties": {n: _number() for n in names},
            "required": required,
            "additionalProperties": False,
        }
        in_order: dict[str, Any] = {
            "type": "array",
            "title": "FeaturesInOrder",
            "description": f"All {len(names)} features in the manifest's order.",
            "items": _number(),
            "minItems": len(names),
            "maxItems": len(names),
        }
    else:
        by_name = {"type": "object", "title": "FeaturesByName", "additionalProperties": _number()}
        in_order = {"type": "array", "title": "FeaturesInOrder", "items": _number()}
    item = {
        "type": "object",
        "title": "PredictRequest",
        "properties": {
            "features": {"oneOf": [by_name, in_order]},
            "card_id": {
                "type": ["integer", "null"],
                "minimum": INT64_MIN,
                "maximum": INT64_MAX,
                "description": "The card; decides the canary variant (sticky) and keys the online features.",
            },
            "transaction_id": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_ID_LENGTH,
                "description": "Joins late labels.",
            },
            "request_id": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_ID_LENGTH,
                "description": "Your id for this request (generated when absent).",
            },
        },
        "required": ["features"],
        "additionalProperties": False,
    }
    batch = {
        "type": "object",
        "title": "BatchRequest",
        "properties": {
            "batch_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
            "transactions": {"type": "array", "items": {"$ref": "#/components/schemas/PredictRequest"}, "minItems": 1},
        },
        "required": ["transactions"],
        "additionalProperties": False,
    }
    return {"PredictRequest": item, "BatchRequest": batch}


def examples(names: list[str] | None, online: list[str], online_enabled: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Request examples for /predict and /predict/batch built from the served feature names."""
    if not names:
        return {}, {}
    by_name = {n: round(0.1 * (i % 7), 2) for i, n in enumerate(names)}
    single = {
        "by_name": {
            "summary": "Features by name",
            "value": {"features": by_name, "card_id": 4211, "transaction_id": "t-000123"},
        },
        "in_order": {
            "summary": "Features in the manifest's order",
            "value": {"features": list(by_name.values()), "transaction_id": "t-000124"},
        },
    }
    if online_enabled:
        without_card = {n: v for n, v in by_name.items() if n not in online}
        single["online"] = {
            "summary": "Card features from the online store",
            "value": {"features": without_card, "card_id": 4211, "transaction_id": "t-000125"},
        }
    batch = {
        "two": {
            "summary": "Two transactions",
            "value": {
                "transactions": [
                    {"features": by_name, "card_id": 4211, "transaction_id": "t-000126"},
                    {"features": list(by_name.values()), "card_id": 977, "transaction_id": "t-000127"},
                ]
            },
        }
    }
    return single, batch


def install(app: FastAPI, rt: Runtime, described: Sequence[BaseRoute] = ()) -> None:
    """Replace ``app.openapi`` by a builder that knows the served feature names.

    ``described``: routes documented in the schema but served by other (plain) routes.
    """

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        parser = rt.parser
        names = list(parser.names) if parser is not None else None
        online = list(rt.settings.online_features)
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=[*described, *app.routes],
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(request_schemas(names, online, rt.settings.online_enabled))
        components["securitySchemes"] = {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        single, batch = examples(names, online, rt.settings.online_enabled)
        paths = schema["paths"]
        for path, ex in (("/predict", single), ("/predict/batch", batch)):
            op = paths[path]["post"]
            if ex:
                op["requestBody"]["content"]["application/json"]["examples"] = ex
            if rt.scoring_keys is not None:
                op["security"] = [{"ApiKeyHeader": []}]
        if names is not None:
            app.openapi_schema = schema  # names are pinned from now on
        return schema

    app.openapi = build  # type: ignore[method-assign]
