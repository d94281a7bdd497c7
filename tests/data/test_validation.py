"""The data-validation gate: a real Great Expectations checkpoint on real batches.

A clean generated batch passes; each kind of corruption, fed alone, is caught and named
in one specific failure line (and nothing else is reported); Data Docs HTML exists after
a run; the CLI exits 1 on a broken warehouse table. One GE context (and so one stored
suite) is shared by the session: creating it is the slow part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from fraudops import schema
from fraudops.data import validation as gate
from fraudops.data.generate import generate_transactions
from fraudops.settings import Settings, ValidationSettings

N_ROWS = 3_000


@pytest.fixture(scope="session")
def gx_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with a home (and so a GE context) shared by the whole session."""
    return Settings(profile="local", home=tmp_path_factory.mktemp("gate-home"))


@pytest.fixture(scope="session")
def clean() -> pa.Table:
    return generate_transactions(N_ROWS, seed=11, days=14)


@pytest.fixture(scope="session")
def reference_time(clean: pa.Table) -> datetime:
    """An hour after the newest event: a fresh batch."""
    newest = gate.newest_event_time(clean)
    return newest + timedelta(hours=1)


@pytest.fixture(scope="session")
def clean_result(clean: pa.Table, gx_settings: Settings, reference_time: datetime) -> gate.ValidationResult:
    return gate.validate_transactions(clean, gx_settings, reference_time=reference_time, build_docs=True)


def _set(table: pa.Table, name: str, values: Any, type_: pa.DataType | None = None) -> pa.Table:
    i = table.schema.get_field_index(name)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    array = values if isinstance(values, pa.Array) else pa.array(values, type=type_ or table.schema.field(name).type)
    return table.set_column(i, table.schema.field(name).with_type(array.type), array)


def _first_rows(table: pa.Table, name: str, n: int, value: float, dtype: str) -> pa.Table:
    values = table.column(name).to_numpy().astype(dtype)
    values[:n] = value
    return _set(table, name, values)


# -------------------------------------------------------------------------- clean batch


def test_clean_batch_passes(clean_result: gate.ValidationResult, clean: pa.Table) -> None:
    r = clean_result
    assert r.success, r.failures
    assert r.failures == ()
    assert r.suite_name == gate.SUITE_NAME
    assert r.suite_version == gate.SUITE_VERSION
    assert r.statistics["rows"] == N_ROWS
    rate = float(np.mean(clean.column(schema.LABEL).to_numpy()))
    assert r.statistics["fraud_rate"] == pytest.approx(rate)
    assert r.statistics["newest_event"] == gate.newest_event_time(clean)
    assert (
        r.statistics["evaluated_expectations"]
        == r.statistics["successful_expectations"]
        == len(gate.build_suite().expectations)
    )
    r.raise_for_failure()  # a pass raises nothing


def test_data_docs_html_exists_after_a_run(clean_result: gate.ValidationResult, gx_settings: Settings) -> None:
    index, page = clean_result.data_docs_index, clean_result.data_docs_page
    assert index is not None and page is not None
    assert index == gate.data_docs_index(gx_settings)
    assert index.is_file() and page.is_file()
    assert page.suffix == ".html" and index.parent in page.parents
    html = page.read_text()
    assert gate.SUITE_NAME in html and "is_fraud" in html
    assert "validations/transactions" in index.read_text()  # the index links the run


def test_result_serializes_to_json(clean_result: gate.ValidationResult) -> None:
    payload = orjson.loads(orjson.dumps(clean_result.to_dict()))
    assert payload["success"] is True
    assert payload["suite_version"] == gate.SUITE_VERSION
    assert payload["statistics"]["rows"] == N_ROWS
    assert payload["data_docs_index"].endswith("index.html")
    assert payload["parameters"]["min_rows"] == ValidationSettings().min_rows


# --------------------------------------------------------------------------- corruptions


@dataclass(frozen=True)
class Corruption:
    """A broken batch (from the clean one) and the failure line that must name it."""

    break_batch: Callable[[pa.Table], pa.Table]
    expected: str
    reference_shift: timedelta = timedelta(0)


def _duplicate_ids(t: pa.Table) -> pa.Table:
    ids = t.column(schema.TRANSACTION_ID).to_pylist()
    ids[:6] = ids[6:12]  # 6 ids now appear twice: 12 rows
    return _set(t, schema.TRANSACTION_ID, ids)


def _fraud_rate(rate: float) -> Callable[[pa.Table], pa.Table]:
    def apply(t: pa.Table) -> pa.Table:
        labels = (np.arange(t.num_rows) < rate * t.num_rows).astype("int8")
        return _set(t, schema.LABEL, labels)

    return apply


CORRUPTIONS: dict[str, Corruption] = {
    "missing_column": Corruption(lambda t: t.drop_columns(["amount"]), "schema: missing column(s) amount"),
    "wrong_feature_type": Corruption(
        lambda t: _set(t, "latent_v05", t.column("latent_v05").to_numpy().astype(str), pa.string()),
        "latent_v05: wrong type string, expected float32 or float64",
    ),
    "null_features": Corruption(lambda t: _first_rows(t, "amount", 5, np.nan, "float32"), "amount: 5 null value(s)"),
    "above_range": Corruption(
        lambda t: _first_rows(t, "merchant_risk_score", 2, 1.5, "float32"),
        "merchant_risk_score: values above the upper bound 1 (maximum 1.5)",
    ),
    "bad_label_values": Corruption(
        lambda t: _first_rows(t, schema.LABEL, 3, 2, "int8"), "is_fraud: values outside {0, 1} (3 rows; e.g. 2)"
    ),
    "duplicate_ids": Corruption(_duplicate_ids, "transaction_id: 12 rows share a duplicate id"),
    "too_few_rows": Corruption(lambda t: t.slice(t.num_rows - 500), "row count: 500 rows, expected between 1,000"),
    "fraud_rate_too_high": Corruption(_fraud_rate(0.10), "is_fraud: fraud rate 10.00% outside [0.10%, 5.00%]"),
    "fraud_rate_too_low": Corruption(_fraud_rate(0.0), "is_fraud: fraud rate 0.00% outside [0.10%, 5.00%]"),
    "stale_timestamps": Corruption(
        lambda t: t, "event_timestamp: stale data, newest event", reference_shift=timedelta(days=5)
    ),
    "events_from_the_future": Corruption(
        lambda t: t, "is after the reference time", reference_shift=timedelta(days=-2)
    ),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_each_corruption_is_caught_and_named(
    kind: str, clean: pa.Table, gx_settings: Settings, reference_time: datetime
) -> None:
    corruption = CORRUPTIONS[kind]
    broken = corruption.break_batch(clean)

    result = gate.validate_transactions(
        broken, gx_settings, reference_time=reference_time + corruption.reference_shift, build_docs=False
    )

    assert not result.success
    # Exactly one line, the one that names this corruption: no noise from its consequences.
    assert len(result.failures) == 1, result.failures
    assert corruption.expected in result.failures[0], result.failures
    with pytest.raises(gate.ValidationFailed) as caught:
        result.raise_for_failure()
    assert caught.value.result is result
    assert corruption.expected in str(caught.value)


def test_an_empty_batch_fails_on_its_row_count_alone(gx_settings: Settings) -> None:
    from fraudops.data.warehouse import transactions_arrow_schema

    result = gate.validate_transactions(transactions_arrow_schema().empty_table(), gx_settings, build_docs=False)
    assert result.failures == ("row count: 0 rows, expected between 1,000 and 50,000,000",)
    assert result.statistics["rows"] == 0 and "newest_event" not in result.statistics
    orjson.dumps(result.to_dict())  # still serializable


def test_several_corruptions_are_all_named(clean: pa.Table, gx_settings: Settings, reference_time: datetime) -> None:
    """Corruptions in different columns of one batch: each one named once, nothing else."""
    broken = _duplicate_ids(_first_rows(clean, schema.LABEL, 3, 7, "int8")).drop_columns(["card_age_days"])
    broken = _set(broken, schema.EVENT_TIMESTAMP, broken.column(schema.EVENT_TIMESTAMP).cast(pa.timestamp("us")))
    broken = _first_rows(broken, "amount", 4, -20.0, "float32")
    broken = _first_rows(broken, "latent_v03", 1, np.inf, "float32")
    broken = _first_rows(broken, "ip_risk_score", 2, -np.inf, "float32")
    broken = _set(broken, schema.CARD_ID, [None, *broken.column(schema.CARD_ID).to_pylist()[1:]])
    bounds = gx_settings.validation.model_copy(update={"max_rows": 2_000})
    settings = gx_settings.model_copy(update={"validation": bounds})

    result = gate.validate_transactions(broken, settings, reference_time=reference_time, build_docs=False)

    assert not result.success
    expected = [
        "schema: missing column(s) card_age_days",
        "row count: 3,000 rows, expected between 1,000 and 2,000",
        # a timezone-naive timestamp is the wrong type (and its freshness is not checked then)
        "event_timestamp: wrong type timestamp[us], expected timestamp with a time zone",
        "card_id: 1 null value(s)",
        "ip_risk_score: 2 null or infinite value(s) (2 of them +-inf)",
        "latent_v03: 1 null or infinite value(s) (1 of them +-inf)",
        "is_fraud: values outside {0, 1} (3 rows; e.g. 7)",
        "transaction_id: 12 rows share a duplicate id",
        "amount: values below the lower bound 0 (minimum -20.0)",
    ]
    for line in expected:
        assert any(line in f for f in result.failures), (line, result.failures)
    assert len(result.failures) == len(expected), "\n".join(result.failures)


# ------------------------------------------------------------------------------ the suite


def test_suite_covers_the_contract() -> None:
    from fraudops.data.warehouse import transactions_arrow_schema

    suite = gate.build_suite()
    assert suite.meta["suite_version"] == gate.SUITE_VERSION
    assert suite.meta["feature_schema_version"] == schema.FEATURE_SCHEMA_VERSION
    assert suite.meta["fingerprint"] == gate.suite_fingerprint()
    by_kind: dict[str, list[Any]] = {}
    for e in suite.expectations:
        by_kind.setdefault(e.meta["check"], []).append(e)
    (columns,) = by_kind["schema"]
    assert columns.column_set == list(transactions_arrow_schema().names)
    assert {e.column for e in by_kind["nulls"]} == set(transactions_arrow_schema().names)
    assert {e.column for e in by_kind["type"]} == set(transactions_arrow_schema().names)
    lows = {e.column: e.min_value for e in by_kind["range_low"]}
    highs = {e.column: e.max_value for e in by_kind["range_high"]}
    assert lows == {f.name: f.low for f in schema.FEATURES if f.low is not None}
    assert highs == {f.name: f.high for f in schema.FEATURES if f.high is not None}
    for kind in ("row_count", "label_values", "duplicates", "fraud_rate", "freshness"):
        assert len(by_kind[kind]) == 1, kind


def test_stored_suite_is_replaced_when_its_definition_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(profile="local", home=tmp_path / "home")
    context = gate.get_gx_context(settings)
    gate.prepare_checkpoint(context, build_docs=False)
    first = context.suites.get(gate.SUITE_NAME)
    gate.prepare_checkpoint(context, build_docs=False)
    assert context.suites.get(gate.SUITE_NAME).id == first.id  # unchanged: reused as is

    monkeypatch.setattr(gate, "SUITE_VERSION", "999.0.0")
    checkpoint = gate.prepare_checkpoint(context, build_docs=True)
    stored = context.suites.get(gate.SUITE_NAME)
    assert stored.id != first.id
    assert stored.meta["suite_version"] == "999.0.0"
    assert stored.meta["fingerprint"] == gate.suite_fingerprint()
    assert checkpoint.validation_definitions[0].suite.id == stored.id


def test_bad_arguments_get_clear_errors(clean: pa.Table, gx_settings: Settings) -> None:
    with pytest.raises(TypeError, match=r"pyarrow\.Table"):
        gate.validate_transactions(clean.to_pandas(), gx_settings)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        gate.validate_transactions(clean, gx_settings, reference_time=datetime(2026, 9, 1))
    inverted = gx_settings.model_copy(update={"validation": ValidationSettings(fraud_rate_min=0.2, fraud_rate_max=0.1)})
    with pytest.raises(ValueError, match="fraud_rate_min"):
        gate.validate_transactions(clean, inverted)


# ------------------------------------------------------------------ warehouse, CLI, task


def _warehouse_with(table: pa.Table) -> None:
    from fraudops.data.warehouse import open_warehouse
    from fraudops.settings import get_settings

    settings = get_settings()
    settings.ensure_home()
    warehouse = open_warehouse(settings)
    try:
        warehouse.write_transactions(table, replace=True)
    finally:
        warehouse.close()


def test_cli_passes_on_a_clean_warehouse_and_fails_on_a_broken_one(
    fraudops_home: Path, clean: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from fraudops.cli import _common
    from fraudops.cli.main import app

    monkeypatch.setattr(_common, "_console", Console(stderr=True, width=400))
    runner = CliRunner()

    _warehouse_with(clean)
    ok = runner.invoke(app, ["data", "validate", "--no-docs"])
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.stderr
    assert orjson.loads(ok.stdout)["success"] is True

    broken = _duplicate_ids(_first_rows(clean, schema.LABEL, 3, 2, "int8"))
    _warehouse_with(broken)
    report = fraudops_home / "validation.json"
    bad = runner.invoke(app, ["data", "validate", "--json", str(report)])
    assert bad.exit_code == 1, bad.output
    assert "FAILED" in bad.stderr
    assert "is_fraud: values outside {0, 1} (3 rows; e.g. 2)" in bad.stderr
    assert "transaction_id: 12 rows share a duplicate id" in bad.stderr
    assert "Data Docs:" in bad.stderr
    payload = orjson.loads(report.read_bytes())
    assert payload["success"] is False and len(payload["failures"]) == 2
    assert Path(payload["data_docs_index"]).is_file()


def test_cli_window_and_reference_time(fraudops_home: Path, clean: pa.Table, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from fraudops.cli import _common
    from fraudops.cli.main import app

    monkeypatch.setattr(_common, "_console", Console(stderr=True, width=400))
    _warehouse_with(clean)
    newest = gate.newest_event_time(clean)
    # The window's end is the reference time: a week later, the data is stale.
    late_end = (newest + timedelta(days=7)).isoformat()
    out = CliRunner().invoke(app, ["data", "validate", "--no-docs", "--end", late_end])
    assert out.exit_code == 1, out.output
    assert "event_timestamp: stale data" in out.stderr
    # A bad window is refused before anything runs.
    out = CliRunner().invoke(app, ["data", "validate", "--start", "2026-10-01", "--end", "2026-09-01"])
    assert out.exit_code == 1 and "is not before" in out.stderr


def test_validate_window_raises_so_nothing_downstream_runs(fraudops_home: Path, clean: pa.Table) -> None:
    from fraudops.settings import get_settings

    broken = _first_rows(clean, "merchant_risk_score", 2, 3.0, "float32")
    _warehouse_with(broken)
    start = datetime.fromisoformat("2026-09-01T00:00:00+00:00")
    end = gate.newest_event_time(clean) + timedelta(seconds=1)
    with pytest.raises(gate.ValidationFailed, match="merchant_risk_score: values above the upper bound 1"):
        gate.validate_window(start, end, settings=get_settings(), build_docs=False)
