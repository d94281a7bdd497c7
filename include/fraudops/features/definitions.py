"""The Feast repository, defined in code from the feature schema.

Nothing here hard-codes a feature: names and order come from :mod:`fraudops.schema`,
so a schema change flows into Feast by itself (and the feature service's name moves
with the schema's major version, so a model never silently reads another contract).

Objects and why each exists:

* ``card`` entity (join key ``card_id``): card-level aggregates are the only features
  that live outside the request, so the card is what the online store is keyed by.
* ``transaction`` entity (join key ``transaction_id``): lets the transaction-level
  features take part in the same point-in-time join as the card ones, so a training
  set is produced by one ``get_historical_features`` call over one feature service.
* ``card_profile`` feature view (online): the card aggregates as of each transaction.
  Materialized to the online store; the predictor fetches it by card id.
* ``transaction_features`` feature view (offline only): these values arrive with the
  request at serving time, so putting them in the online store would only cost memory
  and write time.
* ``fraud_model_v<major>`` feature service: the one list of features that training
  (historical retrieval) and serving (online lookup of its online views) both use.

Sources: Parquet files exported from the warehouse on the embedded default (DuckDB
reads them), the Snowflake transactions table in production. The card source has one
row per transaction ``(card_id, event_timestamp, card_*)``: a point-in-time join of a
transaction therefore gets the card aggregates as they were at that moment, never
later ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudops import schema
from fraudops.data.warehouse import checked_identifier

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    from fraudops.settings import Settings

CARD_ENTITY = "card"
TRANSACTION_ENTITY = "transaction"
CARD_VIEW = "card_profile"
TRANSACTION_VIEW = "transaction_features"
CARD_SOURCE = "card_features_source"
TRANSACTION_SOURCE = "transaction_features_source"

# A card aggregate older than this is not joined (the "30d"/"180d" windows would be
# meaningless by then); every generated transaction carries a fresh one anyway.
CARD_PROFILE_TTL = timedelta(days=90)

# Tag that marks a feature view whose features the predictor reads from the online store.
ONLINE_TAG = "online"


def feature_service_name(schema_version: str = schema.FEATURE_SCHEMA_VERSION) -> str:
    """``fraud_model_v<major>``: a new major schema version is a new service, side by side."""
    major = schema_version.split(".", 1)[0]
    if not major.isdigit():
        raise ValueError(f"feature schema version must start with a number, got {schema_version!r}")
    return f"fraud_model_v{int(major)}"


def source_dir(settings: Settings) -> Path:
    """Where the local profile's exported Parquet sources live."""
    return settings.feast_dir / "data"


def card_source_path(settings: Settings) -> Path:
    return source_dir(settings) / "card_features.parquet"


def transaction_source_path(settings: Settings) -> Path:
    return source_dir(settings) / "transaction_features.parquet"


@dataclass(frozen=True)
class FeastRepo:
    """Every Feast object of the repository, ready for ``FeatureStore.apply``."""

    card: Entity
    transaction: Entity
    card_source: DataSource
    transaction_source: DataSource
    card_profile: FeatureView
    transaction_features: FeatureView
    feature_service: FeatureService

    def objects(self) -> list[Any]:
        """The objects in dependency order."""
        return [
            self.card,
            self.transaction,
            self.card_source,
            self.transaction_source,
            self.card_profile,
            self.transaction_features,
            self.feature_service,
        ]


def _snowflake_query(settings: Settings, columns: list[str]) -> str:
    """A query over the warehouse table that renames its (upper-case) columns to ours.

    Feast quotes column names in the SQL it generates, while the warehouse created them
    unquoted (so Snowflake stores them upper-case); the aliases bridge the two.
    Identifiers are checked, never values: there are no values in this query.
    """
    sf = settings.snowflake
    table = ".".join(f'"{checked_identifier(part)}"' for part in (sf.database, sf.schema_, settings.transactions_table))
    cols = ", ".join(f'{checked_identifier(c).upper()} AS "{c}"' for c in columns)
    return f"SELECT {cols} FROM {table}"


def _sources(settings: Settings) -> tuple[DataSource, DataSource]:
    card_cols = [schema.CARD_ID, schema.EVENT_TIMESTAMP, *schema.CARD_FEATURE_NAMES]
    txn_cols = [schema.TRANSACTION_ID, schema.EVENT_TIMESTAMP, *schema.TRANSACTION_FEATURE_NAMES]
    if settings.profile == "production":
        from feast import SnowflakeSource

        return (
            SnowflakeSource(
                name=CARD_SOURCE,
                query=_snowflake_query(settings, card_cols),
                timestamp_field=schema.EVENT_TIMESTAMP,
                description="card aggregates as of each transaction, from the transactions table",
            ),
            SnowflakeSource(
                name=TRANSACTION_SOURCE,
                query=_snowflake_query(settings, txn_cols),
                timestamp_field=schema.EVENT_TIMESTAMP,
                description="transaction-level features, from the transactions table",
            ),
        )
    from feast import FileSource

    return (
        FileSource(
            name=CARD_SOURCE,
            path=str(card_source_path(settings)),
            timestamp_field=schema.EVENT_TIMESTAMP,
            description="card aggregates as of each transaction, exported from the warehouse",
        ),
        FileSource(
            name=TRANSACTION_SOURCE,
            path=str(transaction_source_path(settings)),
            timestamp_field=schema.EVENT_TIMESTAMP,
            description="transaction-level features, exported from the warehouse",
        ),
    )


def build_repo(settings: Settings) -> FeastRepo:
    """Build the repository's objects for the profile of ``settings``."""
    from feast import Entity, FeatureService, FeatureView, Field, ValueType
    from feast.types import Float32

    card = Entity(
        name=CARD_ENTITY,
        join_keys=[schema.CARD_ID],
        value_type=ValueType.INT64,
        description="a payment card; the key of the online store",
    )
    transaction = Entity(
        name=TRANSACTION_ENTITY,
        join_keys=[schema.TRANSACTION_ID],
        value_type=ValueType.STRING,
        description="one transaction; joins its own features into training sets",
    )
    card_source, transaction_source = _sources(settings)
    tags = {"schema_version": schema.FEATURE_SCHEMA_VERSION}
    card_profile = FeatureView(
        name=CARD_VIEW,
        entities=[card],
        ttl=CARD_PROFILE_TTL,
        schema=[
            Field(name=n, dtype=Float32, description=schema.feature(n).description) for n in schema.CARD_FEATURE_NAMES
        ],
        source=card_source,
        online=True,
        tags={**tags, ONLINE_TAG: "true", "level": "card"},
        description="card-level aggregates; served online by card id",
    )
    transaction_features = FeatureView(
        name=TRANSACTION_VIEW,
        entities=[transaction],
        # 0 = no expiry: the row is stamped with the transaction's own time.
        ttl=timedelta(0),
        schema=[
            Field(name=n, dtype=Float32, description=schema.feature(n).description)
            for n in schema.TRANSACTION_FEATURE_NAMES
        ],
        source=transaction_source,
        # Offline only: these values arrive with the request at serving time.
        online=False,
        tags={**tags, ONLINE_TAG: "false", "level": "transaction"},
        description="transaction-level features; offline only (they arrive with the request)",
    )
    service = FeatureService(
        name=feature_service_name(),
        features=[transaction_features, card_profile],
        tags=tags,
        description=f"every model input of feature schema {schema.FEATURE_SCHEMA_VERSION}; "
        "training and serving both use it",
    )
    return FeastRepo(card, transaction, card_source, transaction_source, card_profile, transaction_features, service)
