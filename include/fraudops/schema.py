"""The feature schema: the one place that says which features a transaction carries.

Everything else (the generator, the validation suite, the Feast repository, the model's
input layer, the ONNX manifest, the predictor and the drift job) reads the names, the
order and the count from here. Bump :data:`FEATURE_SCHEMA_VERSION` whenever a name,
the order, a range or an online flag changes: models record the version they were
trained on and the predictor refuses a bundle whose schema it does not serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FEATURE_SCHEMA_VERSION = "1.0.0"

# Identity and label columns of the transactions table (not model inputs).
TRANSACTION_ID = "transaction_id"
CARD_ID = "card_id"
EVENT_TIMESTAMP = "event_timestamp"
LABEL = "is_fraud"

Level = Literal["transaction", "card"]
Kind = Literal["amount", "count", "ratio", "score", "flag", "time", "distance", "category", "latent"]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One numeric model input.

    ``level`` says who owns the value: ``transaction`` features arrive with the request,
    ``card`` features are card-level aggregates served from the online store (Feast).
    ``low``/``high`` are the valid range checked by the data-validation gate (None: open).
    """

    name: str
    kind: Kind
    level: Level = "transaction"
    low: float | None = None
    high: float | None = None
    description: str = ""


def _velocity() -> list[FeatureSpec]:
    specs: list[FeatureSpec] = []
    for window in ("10m", "1h", "6h", "24h", "7d"):
        specs.append(FeatureSpec(f"txn_count_{window}", "count", low=0, description=f"card transactions in {window}"))
        specs.append(FeatureSpec(f"amount_sum_{window}", "amount", low=0, description=f"card spend in {window}"))
    for window in ("1h", "24h", "7d"):
        specs.append(FeatureSpec(f"distinct_merchants_{window}", "count", low=0))
    for window in ("24h", "7d"):
        specs.append(FeatureSpec(f"distinct_countries_{window}", "count", low=0))
    for window in ("1h", "24h"):
        specs.append(FeatureSpec(f"declined_count_{window}", "count", low=0))
    return specs


_TRANSACTION: list[FeatureSpec] = [
    FeatureSpec("amount", "amount", low=0, description="transaction amount, log-normal"),
    FeatureSpec("amount_log", "amount", description="log1p(amount)"),
    FeatureSpec("hour_of_day", "time", low=0, high=23),
    FeatureSpec("day_of_week", "time", low=0, high=6),
    FeatureSpec("is_weekend", "flag", low=0, high=1),
    FeatureSpec("is_night", "flag", low=0, high=1),
    FeatureSpec("merchant_risk_score", "score", low=0, high=1),
    FeatureSpec("merchant_category_code", "category", low=0, high=19),
    FeatureSpec("is_card_not_present", "flag", low=0, high=1),
    FeatureSpec("is_international", "flag", low=0, high=1),
    FeatureSpec("distance_from_home_km", "distance", low=0),
    FeatureSpec("distance_from_last_txn_km", "distance", low=0),
    FeatureSpec("minutes_since_last_txn", "time", low=0),
    FeatureSpec("device_trust_score", "score", low=0, high=1),
    FeatureSpec("ip_risk_score", "score", low=0, high=1),
    FeatureSpec("email_domain_risk", "score", low=0, high=1),
    FeatureSpec("billing_shipping_mismatch", "flag", low=0, high=1),
    FeatureSpec("amount_to_card_mean_ratio", "ratio", low=0),
    FeatureSpec("amount_zscore_card", "ratio"),
    FeatureSpec("n_items", "count", low=1),
    FeatureSpec("cvv_failures_24h", "count", low=0),
    FeatureSpec("pin_failures_24h", "count", low=0),
    *_velocity(),
]

# Card-level aggregates: the Feast ``card_profile`` feature view, materialized to the
# online store and fetched by the predictor when a request carries a card id.
_CARD: list[FeatureSpec] = [
    FeatureSpec("card_age_days", "time", "card", low=0),
    FeatureSpec("card_credit_limit", "amount", "card", low=0),
    FeatureSpec("card_avg_amount_30d", "amount", "card", low=0),
    FeatureSpec("card_std_amount_30d", "amount", "card", low=0),
    FeatureSpec("card_txn_count_30d", "count", "card", low=0),
    FeatureSpec("card_chargeback_count_180d", "count", "card", low=0),
    FeatureSpec("card_distinct_merchants_30d", "count", "card", low=0),
    FeatureSpec("card_foreign_txn_ratio_30d", "ratio", "card", low=0, high=1),
    FeatureSpec("card_night_txn_ratio_30d", "ratio", "card", low=0, high=1),
    FeatureSpec("card_online_txn_ratio_30d", "ratio", "card", low=0, high=1),
    FeatureSpec("card_utilization_ratio", "ratio", "card", low=0, high=1.5),
    FeatureSpec("card_days_since_address_change", "time", "card", low=0),
]

# Anonymized components, as card networks share them (principal components of
# confidential signals, like the V1..V28 columns of the public card-fraud data set).
N_LATENT = 77
_LATENT: list[FeatureSpec] = [FeatureSpec(f"latent_v{i + 1:02d}", "latent") for i in range(N_LATENT)]

FEATURES: tuple[FeatureSpec, ...] = (*_TRANSACTION, *_CARD, *_LATENT)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
N_FEATURES: int = len(FEATURES)
CARD_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.level == "card")
TRANSACTION_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.level == "transaction")
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}


def feature(name: str) -> FeatureSpec:
    """The spec of one feature, with a clear error for an unknown name."""
    try:
        return FEATURES[FEATURE_INDEX[name]]
    except KeyError:
        raise KeyError(f"unknown feature {name!r} (schema {FEATURE_SCHEMA_VERSION})") from None


def _check() -> None:
    if len(set(FEATURE_NAMES)) != N_FEATURES:
        raise RuntimeError("duplicate feature names in the schema")


_check()
