"""The registry against real MLflow stores: SQLite under FRAUDOPS_HOME and PostgreSQL.

Every test runs on both backends. Model versions are real: a logistic regression logged
with ``mlflow.sklearn.log_model(name=...)`` in its own run, registered with the lineage
tags the training code writes. The PostgreSQL database is created for the session on
127.0.0.1:5432 (user postgres) and dropped afterwards; each test uses its own model name.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fraudops.registry.history import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from fraudops.settings import Settings

PG_HOST = os.environ.get("FRAUDOPS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FRAUDOPS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("FRAUDOPS_TEST_PG_USER", "postgres")
_PG_HINT = (
    f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} as user {PG_USER!r}. Start it "
    "(Debian/Ubuntu: `sudo service postgresql start`, or `pg_ctlcluster 15 main start`; macOS: "
    "`brew services start postgresql`) with trust authentication for local TCP connections; "
    "FRAUDOPS_TEST_PG_HOST/PORT/USER point the tests elsewhere."
)


def _pg_admin() -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"{_PG_HINT}\n({exc})", pytrace=False)
    conn.autocommit = True
    return conn


def _init_mlflow_store(uri: str) -> None:
    from mlflow import MlflowClient

    # Opening both stores creates MLflow's tables (the migrations take a while: once per session).
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database with MLflow's schema; dropped at the end of the session."""
    name = f"fraudops_registry_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    # The driver is named: SQLAlchemy 2.1 (and so MLflow) reads a bare postgresql:// as psycopg 3.
    uri = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        _init_mlflow_store(uri)
        yield uri
    finally:
        from fraudops.registry import audit

        for engine in list(audit._ENGINES.values()):
            engine.dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite database, copied into each test's FRAUDOPS_HOME."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    _init_mlflow_store(f"sqlite:///{path}")
    return path


@dataclass
class Registry:
    """A registered model on one backend, and a way to add real versions to it."""

    backend: str
    settings: Settings
    client: MlflowClient
    experiment_id: str

    @property
    def name(self) -> str:
        return self.settings.model_name

    def register(self, auc: float | None, *, metric_only: bool = False) -> str:
        """Train a tiny logistic regression, log it in its own run and register it (as training does)."""
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(len(self.client.search_model_versions(f"name = '{self.name}'")))
        x = rng.normal(size=(64, 4)).astype("float32")
        y = (x[:, 0] + 0.3 * rng.normal(size=64) > 0).astype(int)
        model = LogisticRegression().fit(x, y)
        with mlflow.start_run(experiment_id=self.experiment_id) as run:
            if auc is not None:
                mlflow.log_metric("test_auc_roc", auc)
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(x, model.predict_proba(x)[:, 1]),
                pip_requirements=["scikit-learn"],
            )
        tags = {
            "run_id": run.info.run_id,
            "data_version": "d41d8cd98f00b204e9800998ecf8427e",
            "feature_schema_version": "1.0.0",
            "threshold": "0.5",
        }
        if auc is not None and not metric_only:
            tags["test_auc_roc"] = repr(float(auc))
        mv = mlflow.register_model(info.model_uri, self.name, tags=tags)
        return str(mv.version)

    def aliases(self) -> dict[str, str]:
        return {a: str(v) for a, v in self.client.get_registered_model(self.name).aliases.items()}


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest,
    fraudops_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_template: Path,
) -> Iterator[Registry]:
    """A fresh registered-model namespace on the backend named by the parameter."""
    from fraudops.settings import get_settings
    from fraudops.training.tracking import configure, ensure_experiment

    name = f"fraud-detector-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FRAUDOPS_MODEL_NAME", name)
    if request.param == "postgresql":
        uri = request.getfixturevalue("pg_database")
        monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("FRAUDOPS_MLFLOW_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    else:
        # The embedded default: tracking URI and artifacts derived from FRAUDOPS_HOME.
        monkeypatch.delenv("FRAUDOPS_MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.delenv("FRAUDOPS_MLFLOW_ARTIFACT_ROOT", raising=False)
        fraudops_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(sqlite_template, fraudops_home / "mlflow.db")
    get_settings.cache_clear()
    cfg = get_settings()
    if request.param == "sqlite":
        assert cfg.tracking_uri == f"sqlite:///{fraudops_home / 'mlflow.db'}"
    client = configure(cfg)
    exp = ensure_experiment(client, name, cfg.artifact_root)
    yield Registry(request.param, cfg, client, exp)
    get_settings.cache_clear()


def _history(reg: Registry) -> list[Any]:
    from fraudops.registry import alias_history

    return alias_history(settings=reg.settings)


# -- promotion ------------------------------------------------------------------------------


def test_first_promotion_makes_champion_then_challenger(registry: Registry) -> None:
    from fraudops.registry import chain_problems, promote

    v1 = registry.register(0.90)
    first = promote(v1, actor="alice", reason="first model", settings=registry.settings)
    assert first.passed and first.decision is not None and not first.decision.has_champion
    assert registry.aliases() == {CHAMPION: v1}
    assert [(m.alias, m.action) for m in first.moves] == [(CHAMPION, "set")]

    v2 = registry.register(0.91)
    second = promote(actor="bob", settings=registry.settings)  # default: the newest version
    assert second.version == v2
    assert second.decision is not None and second.decision.champion_version == v1
    assert registry.aliases() == {CHAMPION: v1, CHALLENGER: v2}

    events = _history(registry)
    assert [(e.alias, e.action, e.from_version, e.to_version, e.actor) for e in events] == [
        (CHAMPION, "set", None, v1, "alice"),
        (CHALLENGER, "set", None, v2, "bob"),
    ]
    assert events[0].reason.startswith("first model [promote v1 to champion directly (no champion yet)")
    assert events[0].moved_at.tzinfo is not None
    assert abs((datetime.now(UTC) - events[1].moved_at).total_seconds()) < 120
    assert chain_problems(events, registry.aliases()) == []

    # The decision is visible on the version in the MLflow UI.
    tags = registry.client.get_model_version(registry.name, v2).tags
    assert tags["gate_passed"] == "true"
    assert tags["gate_champion_version"] == v1

    # Promoting the same version again (a retried task) moves nothing and records nothing.
    again = promote(v2, settings=registry.settings)
    assert again.passed and again.moves == () and "already the challenger" in again.note
    assert len(_history(registry)) == 2


def test_failing_gate_leaves_every_alias_unchanged(registry: Registry) -> None:
    from fraudops.registry import promote

    v1 = registry.register(0.95)
    promote(v1, settings=registry.settings)
    v2 = registry.register(0.945)
    promote(v2, settings=registry.settings)
    before = registry.aliases()
    assert before == {CHAMPION: v1, CHALLENGER: v2}
    n_events = len(_history(registry))

    regressed = registry.register(0.92)  # above the floor, 0.03 below the champion
    result = promote(regressed, skip_canary=True, settings=registry.settings)
    assert not result.passed
    assert result.decision is not None and "champion v1 0.9500" in result.decision.reason
    assert result.moves == ()

    weak = registry.register(0.80)  # below the floor
    result = promote(weak, settings=registry.settings)
    assert not result.passed and "floor" in result.reason + result.decision.reason  # type: ignore[union-attr]

    missing = registry.register(None)  # no AUC at all: the gate fails closed
    result = promote(missing, skip_canary=True, settings=registry.settings)
    assert not result.passed and "no usable test AUC-ROC" in result.decision.reason  # type: ignore[union-attr]

    assert registry.aliases() == before
    assert len(_history(registry)) == n_events
    assert registry.client.get_model_version(registry.name, regressed).tags["gate_passed"] == "false"


def test_auc_falls_back_to_the_run_metric(registry: Registry) -> None:
    from fraudops.registry import promote

    v1 = registry.register(0.88, metric_only=True)
    result = promote(v1, settings=registry.settings)
    assert result.passed and result.decision is not None and result.decision.candidate_auc == pytest.approx(0.88)
    assert registry.aliases() == {CHAMPION: v1}


def test_skip_canary_replaces_champion_and_clears_the_challenger(registry: Registry) -> None:
    from fraudops.registry import chain_problems, promote

    v1, v2, v3 = (registry.register(a) for a in (0.90, 0.91, 0.92))
    promote(v1, settings=registry.settings)
    promote(v2, settings=registry.settings)
    result = promote(v3, skip_canary=True, actor="oncall", settings=registry.settings)
    assert registry.aliases() == {CHAMPION: v3}
    assert [(m.alias, m.from_version, m.to_version) for m in result.moves] == [
        (CHAMPION, v1, v3),
        (CHALLENGER, v2, None),
    ]
    events = _history(registry)
    assert len({e.operation_id for e in events[-2:]}) == 1  # one operation, two moves
    assert chain_problems(events, registry.aliases()) == []


# -- rollback and history -------------------------------------------------------------------


def test_rollback_restores_the_previous_champion(registry: Registry) -> None:
    from fraudops.registry import RegistryError, chain_problems, periods, promote, rollback, version_at_time

    v1, v2, v3 = (registry.register(a) for a in (0.90, 0.91, 0.92))
    promote(v1, settings=registry.settings)
    t1 = datetime.now(UTC)
    time.sleep(0.01)
    promote(v2, skip_canary=True, settings=registry.settings)
    t2 = datetime.now(UTC)
    time.sleep(0.01)
    promote(v3, skip_canary=True, settings=registry.settings)
    t3 = datetime.now(UTC)
    time.sleep(0.01)

    back = rollback(reason="v3 misbehaves in production", actor="oncall", settings=registry.settings)
    assert back.version == v2 and registry.aliases() == {CHAMPION: v2}
    t4 = datetime.now(UTC)
    time.sleep(0.01)
    back = rollback(reason="v2 too", actor="oncall", settings=registry.settings)
    assert back.version == v1 and registry.aliases() == {CHAMPION: v1}
    with pytest.raises(RegistryError, match="first recorded champion"):
        rollback(settings=registry.settings)
    assert registry.aliases() == {CHAMPION: v1}

    events = _history(registry)
    last = events[-1]
    assert (last.operation, last.from_version, last.to_version, last.actor) == ("rollback", v2, v1, "oncall")
    assert last.reason.startswith("v2 too [rollback: champion v2 -> v1")
    assert chain_problems(events, registry.aliases()) == []

    # Which version served at time T.
    assert version_at_time(CHAMPION, datetime(2000, 1, 1), settings=registry.settings) is None
    assert [version_at_time(CHAMPION, t, settings=registry.settings) for t in (t1, t2, t3, t4)] == [v1, v2, v3, v2]
    assert [(p.version, p.until is None) for p in periods(events)] == [
        (v1, False),
        (v2, False),
        (v3, False),
        (v2, False),
        (v1, True),
    ]

    # An explicit version: the operator's decision, no gate.
    to = rollback(to_version=v3, reason="v3 fixed", settings=registry.settings)
    assert to.version == v3 and registry.aliases() == {CHAMPION: v3}
    with pytest.raises(RegistryError, match="already the champion"):
        rollback(to_version=v3, settings=registry.settings)


def test_rollback_without_history_is_refused(registry: Registry) -> None:
    from fraudops.registry import RegistryError, rollback

    v1 = registry.register(0.9)
    with pytest.raises(RegistryError, match="no champion"):
        rollback(settings=registry.settings)
    # A champion set outside fraudops: no history to say what "previous" means.
    registry.client.set_registered_model_alias(registry.name, CHAMPION, v1)
    with pytest.raises(RegistryError, match="no recorded champion history"):
        rollback(settings=registry.settings)
    assert registry.aliases() == {CHAMPION: v1}


# -- canary resolution ----------------------------------------------------------------------


def test_canary_promotes_or_rejects_the_challenger(registry: Registry) -> None:
    from fraudops.registry import (
        RegistryError,
        chain_problems,
        promote,
        promote_challenger_to_champion,
        reject_challenger,
    )

    v1, v2, v3 = (registry.register(a) for a in (0.90, 0.91, 0.905))
    promote(v1, settings=registry.settings)
    promote(v2, settings=registry.settings)

    with pytest.raises(RegistryError, match="not the v3 the canary watched"):
        promote_challenger_to_champion("better", "canary-dag", expected_version=v3, settings=registry.settings)
    assert registry.aliases() == {CHAMPION: v1, CHALLENGER: v2}

    won = promote_challenger_to_champion(
        "precision +2%, latency ok", "canary-dag", expected_version=v2, settings=registry.settings
    )
    assert registry.aliases() == {CHAMPION: v2}
    assert [(m.alias, m.action) for m in won.moves] == [(CHAMPION, "move"), (CHALLENGER, "delete")]
    retry = promote_challenger_to_champion("retry", "canary-dag", expected_version=v2, settings=registry.settings)
    assert retry.moves == () and registry.aliases() == {CHAMPION: v2}

    promote(v3, settings=registry.settings)
    assert registry.aliases() == {CHAMPION: v2, CHALLENGER: v3}
    lost = reject_challenger("error rate 3x champion", "canary-dag", expected_version=v3, settings=registry.settings)
    assert registry.aliases() == {CHAMPION: v2}
    assert lost.events[0].operation == "canary-reject" and lost.events[0].reason.startswith("error rate 3x")
    assert reject_challenger("retry", "canary-dag", settings=registry.settings).moves == ()
    with pytest.raises(RegistryError, match="no challenger"):
        promote_challenger_to_champion("nothing there", "canary-dag", settings=registry.settings)

    events = _history(registry)
    assert chain_problems(events, registry.aliases()) == []
    assert [e.operation for e in events] == [
        "promote",
        "promote",
        "canary-promote",
        "canary-promote",
        "promote",
        "canary-reject",
    ]


# -- store properties -----------------------------------------------------------------------


def test_history_is_append_only_and_the_lock_times_out(registry: Registry) -> None:
    import sqlalchemy as sa

    from fraudops.registry import RegistryLockTimeout, promote
    from fraudops.registry.audit import TABLE_NAME, AuditLog

    promote(registry.register(0.9), settings=registry.settings)
    audit = AuditLog(registry.settings.tracking_uri)
    for statement in (f"UPDATE {TABLE_NAME} SET actor = 'mallory'", f"DELETE FROM {TABLE_NAME}"):
        with audit.engine.connect() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
            conn.execute(sa.text(statement))
    assert [e.actor for e in audit.events(registry.name)] != ["mallory"]
    assert len(audit.events(registry.name)) == 1

    impatient = AuditLog(registry.settings.tracking_uri, lock_timeout_s=0.5)
    with audit.locked(registry.name):
        started = time.monotonic()
        with pytest.raises(RegistryLockTimeout), impatient.locked(registry.name):
            pass
        assert time.monotonic() - started < 10
        # Another model's lock is independent.
        with impatient.locked(registry.name + "-other"):
            pass
    with impatient.locked(registry.name):  # released on exit
        pass


def test_a_move_that_cannot_be_recorded_is_undone(registry: Registry) -> None:
    """The history insert fails after MLflow moved the aliases: the moves are reverted."""
    import sqlalchemy as sa

    from fraudops.registry import promote
    from fraudops.registry.audit import TABLE_NAME, AuditLog

    v1, v2, v3 = (registry.register(a) for a in (0.90, 0.91, 0.92))
    promote(v1, settings=registry.settings)
    promote(v2, settings=registry.settings)
    before = registry.aliases()
    audit = AuditLog(registry.settings.tracking_uri)
    # A real fault in the database: it refuses new history rows from now on.
    with audit.engine.begin() as conn:
        if audit.dialect == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE FUNCTION test_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$"
                )
            )
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER test_refuse_insert BEFORE INSERT ON {TABLE_NAME} "
                    "FOR EACH ROW EXECUTE FUNCTION test_refuse_insert()"
                )
            )
        else:
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER test_refuse_insert BEFORE INSERT ON {TABLE_NAME} "
                    "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
                )
            )
    try:
        with pytest.raises(sa.exc.DatabaseError, match="disk full"):
            promote(v3, skip_canary=True, settings=registry.settings)  # champion and challenger both move
        assert registry.aliases() == before
        assert len(audit.events(registry.name)) == 2
    finally:
        with audit.engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"DROP TRIGGER test_refuse_insert ON {TABLE_NAME}"
                    if audit.dialect == "postgresql"
                    else "DROP TRIGGER test_refuse_insert"
                )
            )
            if audit.dialect == "postgresql":
                conn.execute(sa.text("DROP FUNCTION test_refuse_insert()"))


def test_errors_are_clear_and_change_nothing(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from fraudops.registry import RegistryConfigError, RegistryError, RegistryNotFound, promote, rollback
    from fraudops.settings import get_settings

    with pytest.raises(RegistryNotFound, match="does not exist; train and register a model first"):
        promote(settings=registry.settings)
    v1 = registry.register(0.9)
    with pytest.raises(RegistryNotFound, match="has no version 99"):
        promote("99", settings=registry.settings)
    with pytest.raises(RegistryError, match="positive integer"):
        promote("latest-ish", settings=registry.settings)
    with pytest.raises(RegistryError, match="at most 256"):
        promote(v1, actor="x" * 300, settings=registry.settings)
    assert registry.aliases() == {}
    assert v1 == "1"

    monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    get_settings.cache_clear()
    with pytest.raises(RegistryConfigError, match="not a database URI"):
        rollback(settings=get_settings())


def test_database_down_is_reported_quickly(fraudops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from fraudops.registry import RegistryUnavailable, promote
    from fraudops.settings import get_settings

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{port}/mlflow")
    get_settings.cache_clear()
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=f"127.0.0.1:{port}") as info:
        promote(settings=get_settings())
    assert "s3cret" not in str(info.value)
    assert time.monotonic() - started < 15


# -- CLI ------------------------------------------------------------------------------------


def test_cli_promote_history_show_rollback(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from rich.console import Console
    from typer.testing import CliRunner

    from fraudops.cli import _common
    from fraudops.cli.main import app

    # A wide console, so that table cells do not fold in the middle of the words checked below.
    monkeypatch.setattr(_common, "_console", Console(stderr=True, width=240))

    runner = CliRunner()
    v1, v2, v3 = (registry.register(a) for a in (0.90, 0.93, 0.85))

    out = runner.invoke(app, ["promote", "--model-version", v1, "--actor", "ci", "--reason", "bootstrap [ci]"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["aliases_after"] == {CHAMPION: v1}
    out = runner.invoke(app, ["promote", "--skip-canary"], env={"FRAUDOPS_ACTOR": "release-bot"})
    assert out.exit_code == 3, out.output  # v3 (0.85) regresses against v1 (0.90)
    assert "rejected" in out.stderr and "champion v1" in out.stderr
    assert registry.aliases() == {CHAMPION: v1}
    out = runner.invoke(app, ["promote", "--model-version", v2, "--skip-canary"], env={"FRAUDOPS_ACTOR": "release-bot"})
    assert out.exit_code == 0, out.output
    assert registry.aliases() == {CHAMPION: v2}

    out = runner.invoke(app, ["registry", "history", "--json"])
    assert out.exit_code == 0, out.output
    hist = json.loads(out.stdout)
    assert [(e["to_version"], e["actor"]) for e in hist["events"]] == [(v1, "ci"), (v2, "release-bot")]
    assert [p["until"] is None for p in hist["periods"]] == [False, True]

    out = runner.invoke(app, ["registry", "history", "--at", hist["events"][0]["moved_at"], "--json"])
    assert json.loads(out.stdout)["at"]["aliases"] == {CHAMPION: v1}
    out = runner.invoke(app, ["registry", "history"])
    assert out.exit_code == 0 and "which version held which alias" in out.stderr
    assert "bootstrap [ci] [promote v1" in out.stderr  # reasons are shown as text, not as markup
    out = runner.invoke(app, ["registry", "history", "--events"])
    assert out.exit_code == 0 and "release-bot" in out.stderr

    out = runner.invoke(app, ["registry", "show", "--json"])
    shown = json.loads(out.stdout)
    assert shown["aliases"] == {CHAMPION: v2}
    assert [v["version"] for v in shown["versions"]] == [v3, v2, v1]
    assert shown["versions"][1]["aliases"] == [CHAMPION]
    assert shown["versions"][0]["gate_passed"] == "false"
    out = runner.invoke(app, ["registry", "show", "--model-version", v2])
    assert out.exit_code == 0 and "test_auc_roc" in out.stderr
    out = runner.invoke(app, ["registry", "show"])
    assert out.exit_code == 0 and "0.9300" in out.stderr

    out = runner.invoke(app, ["rollback", "--reason", "latency regression", "--actor", "oncall"])
    assert out.exit_code == 0, out.output
    assert registry.aliases() == {CHAMPION: v1}
    out = runner.invoke(app, ["rollback"])
    assert out.exit_code == 1 and "first recorded champion" in out.stderr
    out = runner.invoke(app, ["promote", "--model-version", "42"])
    assert out.exit_code == 1 and "has no version 42" in out.stderr
    assert registry.aliases() == {CHAMPION: v1}


# -- concurrency ----------------------------------------------------------------------------


def _concurrent_promote(env: dict[str, str], version: str, barrier: Any, results: Any) -> None:
    """Child process: promote ``version`` the moment every child is ready."""
    os.environ.update(env)
    import mlflow

    from fraudops.registry import current_aliases, promote

    # Widen the window between reading the champion and moving the alias, so that an
    # unserialized implementation would be caught: the real call, made slower.
    original = mlflow.MlflowClient.set_registered_model_alias

    def slow_set(self: Any, name: str, alias: str, ver: str) -> None:
        time.sleep(0.3)
        original(self, name, alias, ver)

    mlflow.MlflowClient.set_registered_model_alias = slow_set  # type: ignore[method-assign]
    current_aliases()  # open MLflow's store and ours before the start line
    barrier.wait(timeout=120)
    try:
        change = promote(version, actor=f"proc-{version}", reason="concurrent")
        results.put((version, "ok", change.to_dict()))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put((version, "error", repr(exc)))


@pytest.mark.slow
def test_concurrent_promotions_leave_exactly_one_champion(registry: Registry) -> None:
    from fraudops.registry import chain_problems

    versions = [registry.register(a) for a in (0.90, 0.905, 0.91, 0.915)]
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("FRAUDOPS_") or k in ("PATH", "HOME", "TMPDIR", "PYTHONPATH")
    }
    # A fork server: its children inherit no engine, connection or MLflow state from this
    # process (unlike fork), and it imports MLflow once for all of them (unlike spawn).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "mlflow", "sqlalchemy", "psycopg2", "fraudops.registry.audit"])
    barrier = ctx.Barrier(len(versions))
    results = ctx.Queue()
    procs = [ctx.Process(target=_concurrent_promote, args=(env, v, barrier, results)) for v in versions]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    errors = [o for o in outcomes if o[1] != "ok"]
    assert not errors, errors
    changes = {version: payload for version, _, payload in outcomes}
    assert all(c["passed"] for c in changes.values())

    aliases = registry.aliases()
    events = _history(registry)
    champion_events = [e for e in events if e.alias == CHAMPION]
    # Exactly one promotion found no champion and took it; the three others saw it, inside
    # the lock, and became challenger one after the other.
    assert len(champion_events) == 1, champion_events
    winner = champion_events[0].to_version
    assert aliases[CHAMPION] == winner
    assert sum(1 for c in changes.values() if any(m["alias"] == CHAMPION for m in c["moves"])) == 1
    assert next(e.from_version for e in events if e.alias == CHALLENGER) is None
    assert len([e for e in events if e.alias == CHALLENGER]) == 3
    assert chain_problems(events, aliases) == []
    # Each promotion was gated against the champion that was really there.
    for version, change in changes.items():
        expected = None if version == winner else winner
        assert change["decision"]["champion_version"] == expected
