"""``feature_store.yaml`` per profile, generated from the templates shipped in the package.

The templates live in ``fraudops/features/repo/``. Two kinds of placeholder:

* ``{{name}}`` -- filled from the settings when the file is generated (paths, hosts,
  account names: nothing secret);
* ``${VAR}`` -- left in the file and resolved from the environment when the store is
  opened, so secrets never land on disk. ``FRAUDOPS_REDIS_PASSWORD`` is derived from
  ``FRAUDOPS_REDIS_URL`` in-process when the environment does not set it.

The online store is SQLite on the embedded default and Redis in production; a local
profile with ``FRAUDOPS_REDIS_URL`` set uses Redis too, so tests and benchmarks run the
production code path against a real server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from feast import RepoConfig

    from fraudops.settings import Settings

FEATURE_STORE_YAML = "feature_store.yaml"
REDIS_PASSWORD_VAR = "FRAUDOPS_REDIS_PASSWORD"
_RENDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class FeatureStoreConfigError(ValueError):
    """The Feast configuration cannot be built (bad URL, missing environment variable...)."""


def _template(name: str) -> str:
    return resources.files("fraudops.features").joinpath("repo").joinpath(name).read_text(encoding="utf-8")


def _scalar(value: str | None) -> str:
    """A YAML scalar for ``value``: JSON strings are valid YAML and escape everything."""
    return "null" if value in (None, "") else json.dumps(value)


def _render(text: str, values: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise FeatureStoreConfigError(f"template placeholder {{{{{key}}}}} has no value")
        return values[key]

    return _RENDER.sub(sub, text)


def redis_connection_string(url: str) -> tuple[str, str | None]:
    """Feast's Redis connection string for a ``redis://`` or ``rediss://`` URL.

    Returns ``(connection_string, password)``: the string carries a
    ``password=${FRAUDOPS_REDIS_PASSWORD}`` placeholder instead of the password itself.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise FeatureStoreConfigError(f"FRAUDOPS_REDIS_URL must be redis:// or rediss://, got {parts.scheme!r}")
    if not parts.hostname:
        raise FeatureStoreConfigError(f"FRAUDOPS_REDIS_URL has no host: {url!r}")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise FeatureStoreConfigError(f"FRAUDOPS_REDIS_URL has a bad port: {exc}") from None
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise FeatureStoreConfigError(f"FRAUDOPS_REDIS_URL database must be a number, got {db_text!r}")
    items = [f"{parts.hostname}:{port}", f"db={int(db_text)}"]
    if parts.scheme == "rediss":
        items.append("ssl=true")
    if parts.username:
        items.append(f"username={unquote(parts.username)}")
    password = unquote(parts.password) if parts.password else None
    if password is not None:
        if "," in password:
            # Feast splits its connection string on commas.
            raise FeatureStoreConfigError("the Redis password must not contain ',' (Feast's separator)")
        items.append(f"password=${{{REDIS_PASSWORD_VAR}}}")
    return ",".join(items), password


def uses_redis(settings: Settings) -> bool:
    """Whether the online store is Redis (always in production; locally when a URL is set)."""
    return settings.profile == "production" or bool(settings.redis_url)


def _online_block(settings: Settings) -> str:
    if uses_redis(settings):
        if not settings.redis_url:
            raise FeatureStoreConfigError("the production online store needs FRAUDOPS_REDIS_URL")
        conn, _ = redis_connection_string(settings.redis_url)
        return _render(_template("online_redis.yaml"), {"redis_connection": _scalar(conn)}).rstrip("\n")
    path = str(settings.feast_dir / "online_store.db")
    return _render(_template("online_sqlite.yaml"), {"sqlite_path": _scalar(path)}).rstrip("\n")


def render_feature_store_yaml(settings: Settings) -> str:
    """The ``feature_store.yaml`` text of the profile of ``settings`` (secrets as ``${VAR}``)."""
    values = {"project": _scalar(settings.feast_project), "online_store": _online_block(settings)}
    if settings.profile == "production":
        sf = settings.snowflake
        values |= {
            "snowflake_account": _scalar(sf.account),
            "snowflake_user": _scalar(sf.user),
            "snowflake_role": _scalar(sf.role),
            "snowflake_warehouse": _scalar(sf.warehouse),
            "snowflake_database": _scalar(sf.database),
            "snowflake_schema": _scalar(sf.schema_),
        }
        return _render(_template("feature_store.production.yaml"), values)
    values["registry_path"] = _scalar(str(settings.feast_dir / "registry.db"))
    return _render(_template("feature_store.local.yaml"), values)


def write_feature_repo(settings: Settings) -> Path:
    """Write ``feature_store.yaml`` (and the ``feast`` CLI entry module) into ``settings.feast_dir``.

    Returns the directory. Rewriting is safe: the file only depends on the settings.
    """
    repo = settings.feast_dir
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    _atomic_write(repo / FEATURE_STORE_YAML, render_feature_store_yaml(settings))
    _atomic_write(repo / "feast_repo.py", _template("feast_repo.py"))
    return repo


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    if settings.redis_url and REDIS_PASSWORD_VAR not in env:
        _, password = redis_connection_string(settings.redis_url)
        if password is not None:
            env[REDIS_PASSWORD_VAR] = password
    return env


def _substitute(value: Any, env: Mapping[str, str], missing: set[str]) -> Any:
    """Resolve ``${VAR}`` in every string leaf (after YAML parsing, so any secret is safe)."""
    if isinstance(value, dict):
        return {k: _substitute(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, missing) for v in value]
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in env:
                missing.add(name)
                return match.group(0)
            return env[name]

        return _ENV.sub(sub, value)
    return value


def load_repo_config(settings: Settings, environ: Mapping[str, str] | None = None) -> RepoConfig:
    """Read the generated ``feature_store.yaml``, resolve its ``${VAR}``s, and validate it.

    Raises :class:`FeatureStoreConfigError` naming every variable the environment lacks,
    or when the file has not been generated yet.
    """
    import yaml
    from feast import RepoConfig
    from pydantic import ValidationError

    path = settings.feast_dir / FEATURE_STORE_YAML
    if not path.is_file():
        raise FeatureStoreConfigError(f"{path} does not exist: run `fraudops features apply` first")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing: set[str] = set()
    resolved = _substitute(raw, _environment(settings, os.environ if environ is None else environ), missing)
    if missing:
        raise FeatureStoreConfigError(f"{path} needs these environment variables: {', '.join(sorted(missing))}")
    try:
        config = RepoConfig(**resolved)
    except ValidationError as exc:
        raise FeatureStoreConfigError(f"invalid {path}: {exc}") from None
    config.repo_path = settings.feast_dir
    return config
