"""feature_store.yaml per profile, secrets from the environment, and the production path.

The production profile is exercised against the closest real things: the SQL registry
on a throwaway PostgreSQL database, the Redis online store on a password-protected
``redis-server`` started here, and the Snowflake source queries run through the
Snowflake connector on ``fakesnow``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fraudops import schema

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_HINT = (
    "PostgreSQL is not reachable at 127.0.0.1:5432 (user postgres, trust auth). Start it, e.g. "
    "`sudo service postgresql start` (Debian/Ubuntu) or `brew services start postgresql` (macOS)."
)
SECRET_SF = "sf-Pa55:word/with#chars"
SECRET_REDIS = "redis-S3cret"


def _local(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    from fraudops.settings import get_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return get_settings()


# ------------------------------------------------------------------ local profile


def test_local_profile_is_duckdb_and_sqlite(fraudops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from fraudops.features.config import load_repo_config, render_feature_store_yaml, write_feature_repo

    monkeypatch.delenv("FRAUDOPS_REDIS_URL", raising=False)
    settings = _local(monkeypatch)
    raw = yaml.safe_load(render_feature_store_yaml(settings))
    assert raw["offline_store"] == {"type": "duckdb"}
    assert raw["online_store"] == {"type": "sqlite", "path": str(settings.feast_dir / "online_store.db")}
    assert raw["registry"]["path"] == str(settings.feast_dir / "registry.db")

    repo = write_feature_repo(settings)
    assert repo == settings.feast_dir and (repo / "feature_store.yaml").is_file() and (repo / "feast_repo.py").is_file()
    config = load_repo_config(settings)
    assert config.offline_store.type == "duckdb"
    assert config.online_store.type == "sqlite"
    assert config.project == settings.feast_project


def test_local_profile_with_a_redis_url_uses_redis(fraudops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from fraudops.features.config import load_repo_config, render_feature_store_yaml, write_feature_repo

    settings = _local(monkeypatch, FRAUDOPS_REDIS_URL=f"rediss://app:{SECRET_REDIS}@cache.internal:6380/2")
    text = render_feature_store_yaml(settings)
    assert SECRET_REDIS not in text
    online = yaml.safe_load(text)["online_store"]
    assert online["type"] == "redis"
    assert (
        online["connection_string"]
        == "cache.internal:6380,db=2,ssl=true,username=app,password=${FRAUDOPS_REDIS_PASSWORD}"
    )
    write_feature_repo(settings)
    # In-process, the password comes from the URL; nothing secret was written to disk.
    config = load_repo_config(settings, environ={})
    assert config.online_store.connection_string.endswith(f"password={SECRET_REDIS}")
    assert SECRET_REDIS not in (settings.feast_dir / "feature_store.yaml").read_text()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost:6379", "redis:// or rediss://"),
        ("redis://:6379/0", "no host"),
        ("redis://localhost:notaport/0", "bad port"),
        ("redis://localhost:6379/zero", "must be a number"),
        ("redis://:a,b@localhost:6379/0", "must not contain ','"),
    ],
)
def test_bad_redis_urls_are_named(url: str, message: str) -> None:
    from fraudops.features.config import FeatureStoreConfigError, redis_connection_string

    with pytest.raises(FeatureStoreConfigError, match=message):
        redis_connection_string(url)


def test_feature_service_follows_the_schema_major_version() -> None:
    from fraudops.features.definitions import feature_service_name

    assert feature_service_name() == f"fraud_model_v{int(schema.FEATURE_SCHEMA_VERSION.split('.')[0])}"
    assert feature_service_name("2.3.1") == "fraud_model_v2"
    with pytest.raises(ValueError, match="must start with a number"):
        feature_service_name("beta")


def test_repository_objects_come_from_the_schema(fraudops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fraudops.features.definitions import build_repo

    repo = build_repo(_local(monkeypatch))
    assert [f.name for f in repo.card_profile.features] == list(schema.CARD_FEATURE_NAMES)
    assert [f.name for f in repo.transaction_features.features] == list(schema.TRANSACTION_FEATURE_NAMES)
    assert repo.card_profile.online and repo.card_profile.tags["online"] == "true"
    assert not repo.transaction_features.online and repo.transaction_features.tags["online"] == "false"
    assert repo.card.join_key == schema.CARD_ID and repo.transaction.join_key == schema.TRANSACTION_ID
    served = [f.name for p in repo.feature_service.feature_view_projections for f in p.features]
    assert sorted(served) == sorted(schema.FEATURE_NAMES)


# ------------------------------------------------------------- production profile


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database (created and dropped here); yields its SQLAlchemy URL."""
    import psycopg2

    name = f"fraudops_feast_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(PG_DSN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"{PG_HINT}\n({exc})", pytrace=False)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[Any]:
    from tests.integration.conftest import start_redis_server, stop_redis_server

    server = start_redis_server(tmp_path / "redis-auth", "--requirepass", SECRET_REDIS)
    try:
        yield server
    finally:
        stop_redis_server(server)


@pytest.fixture
def production(fraudops_home: Path, monkeypatch: pytest.MonkeyPatch, password_redis: Any, pg_database: str) -> Any:
    return _local(
        monkeypatch,
        FRAUDOPS_PROFILE="production",
        FRAUDOPS_SNOWFLAKE__ACCOUNT="acme-eu1",
        FRAUDOPS_SNOWFLAKE__USER="fraudops",
        FRAUDOPS_SNOWFLAKE__PASSWORD=SECRET_SF,
        FRAUDOPS_SNOWFLAKE__WAREHOUSE="ML_WH",
        FRAUDOPS_REDIS_URL=f"redis://:{SECRET_REDIS}@{password_redis.host}:{password_redis.port}/0",
        FRAUDOPS_MLFLOW_TRACKING_URI="http://mlflow.internal:5000",
        FRAUDOPS_DVC_REMOTE_URL="s3://fraudops/dvc",
        FRAUDOPS_FEAST_REGISTRY_URL=pg_database,
    )


def test_production_yaml_keeps_secrets_in_the_environment(production: Any) -> None:
    import yaml

    from fraudops.features.config import FeatureStoreConfigError, load_repo_config, write_feature_repo

    write_feature_repo(production)
    text = (production.feast_dir / "feature_store.yaml").read_text()
    assert SECRET_SF not in text and SECRET_REDIS not in text
    assert os.environ["FRAUDOPS_FEAST_REGISTRY_URL"] not in text
    raw = yaml.safe_load(text)
    assert raw["offline_store"]["type"] == "snowflake.offline"
    assert raw["offline_store"]["password"] == "${FRAUDOPS_SNOWFLAKE__PASSWORD}"
    assert raw["offline_store"]["account"] == "acme-eu1" and raw["offline_store"]["warehouse"] == "ML_WH"
    assert raw["registry"]["registry_type"] == "sql"
    assert raw["online_store"]["type"] == "redis"

    with pytest.raises(FeatureStoreConfigError) as err:
        load_repo_config(production, environ={})
    assert "FRAUDOPS_FEAST_REGISTRY_URL" in str(err.value) and "FRAUDOPS_SNOWFLAKE__PASSWORD" in str(err.value)

    config = load_repo_config(production)
    assert config.offline_store.password == SECRET_SF  # a secret with ':', '/' and '#' survives intact
    assert config.online_store.connection_string.endswith(f"password={SECRET_REDIS}")


def test_production_apply_registers_in_postgres_and_serves_from_redis(production: Any) -> None:
    """apply on the SQL registry (real PostgreSQL), online reads from Redis behind a password."""
    import redis

    from fraudops.data.generate import generate_transactions
    from fraudops.features.definitions import CARD_VIEW
    from fraudops.features.store import CardFeatureReader, apply

    result = apply(production)
    assert result.offline_store == "snowflake.offline" and result.online_store == "redis"
    assert "SnowflakeSource:card_features_source" in result.objects
    assert apply(production).objects == result.objects  # idempotent

    # Materialization needs Snowflake itself; write the same rows through Feast's own
    # online write path instead, and read them back the way the predictor does.
    rows = generate_transactions(200, seed=9, n_cards=20, days=2)
    frame = rows.select([schema.CARD_ID, schema.EVENT_TIMESTAMP, *schema.CARD_FEATURE_NAMES]).to_pandas()
    reader = CardFeatureReader.open(production)
    reader.store.write_to_online_store(CARD_VIEW, df=frame)
    latest = frame.sort_values(schema.EVENT_TIMESTAMP).groupby(schema.CARD_ID).tail(1).set_index(schema.CARD_ID)
    online = reader.get(latest.index.tolist())
    assert set(online) == set(latest.index)
    for card, values in online.items():
        np.testing.assert_array_equal(
            np.array(list(values.values()), dtype=np.float32),
            latest.loc[card, list(schema.CARD_FEATURE_NAMES)].to_numpy(dtype=np.float32),
        )
    client = redis.Redis.from_url(production.redis_url)
    assert client.dbsize() == len(latest)


def test_snowflake_source_queries_run_on_the_warehouse_table(production: Any) -> None:
    """The sources' SQL (Snowflake's upper-case columns aliased to ours) runs on fakesnow."""
    import fakesnow
    import snowflake.connector

    from fraudops.data.generate import generate_transactions
    from fraudops.data.warehouse import SnowflakeWarehouse
    from fraudops.features.definitions import build_repo

    repo = build_repo(production)
    batch = generate_transactions(300, seed=4, days=2)
    with fakesnow.patch():
        con = snowflake.connector.connect(database=production.snowflake.database, schema=production.snowflake.schema_)
        SnowflakeWarehouse(con, production.transactions_table).write_transactions(batch, replace=True)
        for source, columns in (
            (repo.card_source, [schema.CARD_ID, schema.EVENT_TIMESTAMP, *schema.CARD_FEATURE_NAMES]),
            (
                repo.transaction_source,
                [schema.TRANSACTION_ID, schema.EVENT_TIMESTAMP, *schema.TRANSACTION_FEATURE_NAMES],
            ),
        ):
            cur = con.cursor()
            # Quoted lower-case names, as the SQL Feast generates selects them.
            quoted = ", ".join(f'"{c}"' for c in columns)
            cur.execute(f'SELECT {quoted} FROM {source.get_table_query_string()} ORDER BY "event_timestamp"')
            # fakesnow runs on DuckDB, whose identifiers ignore case: compare names case-blind.
            names = [d[0].lower() for d in cur.description]
            assert names == columns
            rows = cur.fetchall()
            assert len(rows) == batch.num_rows
            first = dict(zip(names, rows[0], strict=True))
            assert first[columns[0]] == batch.column(columns[0])[0].as_py()
            assert first[columns[-1]] == pytest.approx(batch.column(columns[-1])[0].as_py())
        con.close()
