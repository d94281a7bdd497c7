"""The data-validation gate: a versioned Great Expectations suite over the transactions.

The suite is defined here, in code, and stamped with :data:`SUITE_VERSION` (plus a
fingerprint of its expectations) in its meta. It checks

* schema and types: every column of the transactions contract is present, identity
  columns have their contract types, every feature is a float column;
* nulls in every column (in features, NaN and +-inf count as null);
* value ranges of the features (``FeatureSpec.low``/``high`` of :mod:`fraudops.schema`);
* label values in {0, 1}, duplicate transaction ids;
* row count, fraud rate and freshness of the newest event against bounds that come from
  ``settings.validation`` and the run's reference time (suite parameters, so the stored
  suite does not change with the configuration).

It runs as a GE checkpoint against a file-backed context under ``settings.gx_dir``,
which stores every validation result and (with ``build_docs``) updates the Data Docs
site that an operator opens in a browser. The result names each failure in one short
line, e.g. ``is_fraud: values outside {0, 1} (3 rows; e.g. 2)``.

Speed: GE's pandas engine copies the whole frame for every "map" expectation that
filters nulls, which on 200k rows x 132 columns costs minutes. So value ranges are
checked with the column min/max aggregate expectations (vectorized, no copy): the
failure reports the offending extreme rather than a row count. Null checks, label
values and duplicate ids stay per-row expectations over all rows. The rest of a run is
GE's per-expectation bookkeeping, which is why infinities are folded into the null
check instead of doubling the range expectations.

Great Expectations is imported inside the functions that need it (it takes ~15 s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from fraudops import schema

if TYPE_CHECKING:
    import pyarrow as pa
    from great_expectations.checkpoint.checkpoint import Checkpoint
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.data_context.abstract_data_context import AbstractDataContext

    from fraudops.settings import Settings

log = logging.getLogger(__name__)

SUITE_NAME = "transactions"
# Bump on any change of the expectations below (kinds, columns, bounds, types); the
# fingerprint in the suite's meta also catches a change to the feature schema.
SUITE_VERSION = "1.0.0"

DATASOURCE_NAME = "fraudops"
ASSET_NAME = "transactions"
BATCH_DEFINITION_NAME = "whole_batch"
VALIDATION_DEFINITION_NAME = "transactions_gate"
CHECKPOINT_NAME = "transactions_gate"
# A second checkpoint over the same validation, without the Data Docs action, for
# callers that do not want the HTML rebuilt (tests, tight loops).
CHECKPOINT_NAME_NO_DOCS = "transactions_gate_no_docs"

# +-inf in a feature counts as a null (the frame GE sees holds NaN there): one not-null
# expectation per column then covers NaN, None and infinities, and the range checks need
# no "finite" sentinel bounds on open sides (half the expectations, half the run time).
_NULL_NOTE = "NaN and +-inf count as null: infinities are mapped to NaN before validation."
FEATURE_TYPES = ("float32", "float64")
# Contract types of the identity columns, as GE's pandas engine names them
# ("Timestamp" is the scalar type of a timezone-aware datetime column only).
IDENTITY_TYPES: dict[str, str] = {
    schema.TRANSACTION_ID: "str",
    schema.CARD_ID: "int64",
    schema.EVENT_TIMESTAMP: "Timestamp",
    schema.LABEL: "int8",
}
# The same, as an operator reads them in a failure line.
_CONTRACT_TYPE_NAMES: dict[str, str] = {
    schema.TRANSACTION_ID: "string",
    schema.CARD_ID: "int64",
    schema.EVENT_TIMESTAMP: "timestamp with a time zone",
    schema.LABEL: "int8",
}
LABEL_VALUES = (0, 1)

# Suite parameter names (values supplied per run by :func:`suite_parameters`).
P_MIN_ROWS = "min_rows"
P_MAX_ROWS = "max_rows"
P_FRAUD_RATE_MIN = "fraud_rate_min"
P_FRAUD_RATE_MAX = "fraud_rate_max"
P_OLDEST_ALLOWED = "newest_event_not_before"
P_REFERENCE_TIME = "reference_time"

_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 5}


class ValidationFailed(RuntimeError):
    """The gate failed: nothing downstream may run. ``result`` holds the details."""

    def __init__(self, result: ValidationResult) -> None:
        self.result = result
        lines = "\n".join(f"  - {f}" for f in result.failures)
        where = f"\nData Docs: {result.data_docs_page or result.data_docs_index}" if result.data_docs_index else ""
        super().__init__(
            f"data validation failed ({len(result.failures)} problem(s), suite {result.suite_name} "
            f"v{result.suite_version}):\n{lines}{where}"
        )


@dataclass(frozen=True)
class ValidationResult:
    """What the gate found.

    ``failures`` has one short line per problem, each naming the column and the check.
    ``statistics`` holds the observed row count, fraud rate and newest event, and GE's
    expectation counts. ``data_docs_index`` is the Data Docs site an operator opens,
    ``data_docs_page`` the page of this very run (both None without ``build_docs``).
    """

    success: bool
    failures: tuple[str, ...]
    statistics: dict[str, Any]
    suite_name: str
    suite_version: str
    run_id: str
    reference_time: datetime
    data_docs_index: Path | None = None
    data_docs_page: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def raise_for_failure(self) -> ValidationResult:
        """Raise :class:`ValidationFailed` unless the gate passed; return self otherwise."""
        if not self.success:
            raise ValidationFailed(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (datetimes and paths as strings)."""
        return {
            "success": self.success,
            "failures": list(self.failures),
            "statistics": {k: _jsonable(v) for k, v in self.statistics.items()},
            "suite_name": self.suite_name,
            "suite_version": self.suite_version,
            "run_id": self.run_id,
            "reference_time": self.reference_time.isoformat(),
            "parameters": {k: _jsonable(v) for k, v in self.parameters.items()},
            "data_docs_index": str(self.data_docs_index) if self.data_docs_index else None,
            "data_docs_page": str(self.data_docs_page) if self.data_docs_page else None,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# --------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class _Check:
    """One expectation of the suite: the GE class name, its kwargs and what it checks."""

    expectation: str
    kwargs: dict[str, Any]
    check: str
    column: str | None = None
    notes: str | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return {"check": self.check, "column": self.column}


def _param(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def _checks() -> list[_Check]:
    """The expectations of the suite, in the order they are reported."""
    from fraudops.data.warehouse import transactions_arrow_schema

    columns = list(transactions_arrow_schema().names)
    checks = [
        _Check("ExpectTableColumnsToMatchSet", {"column_set": columns, "exact_match": False}, "schema"),
        _Check(
            "ExpectTableRowCountToBeBetween",
            {"min_value": _param(P_MIN_ROWS), "max_value": _param(P_MAX_ROWS)},
            "row_count",
        ),
    ]
    for column, type_ in IDENTITY_TYPES.items():
        checks.append(_Check("ExpectColumnValuesToBeOfType", {"column": column, "type_": type_}, "type", column))
    for spec in schema.FEATURES:
        checks.append(
            _Check(
                "ExpectColumnValuesToBeInTypeList",
                {"column": spec.name, "type_list": list(FEATURE_TYPES)},
                "type",
                spec.name,
            )
        )
    features = set(schema.FEATURE_NAMES)
    for column in columns:
        note = _NULL_NOTE if column in features else None
        checks.append(_Check("ExpectColumnValuesToNotBeNull", {"column": column}, "nulls", column, note))
    checks += [
        _Check(
            "ExpectColumnValuesToBeInSet",
            {"column": schema.LABEL, "value_set": list(LABEL_VALUES)},
            "label_values",
            schema.LABEL,
        ),
        _Check("ExpectColumnValuesToBeUnique", {"column": schema.TRANSACTION_ID}, "duplicates", schema.TRANSACTION_ID),
        _Check(
            "ExpectColumnMeanToBeBetween",
            {"column": schema.LABEL, "min_value": _param(P_FRAUD_RATE_MIN), "max_value": _param(P_FRAUD_RATE_MAX)},
            "fraud_rate",
            schema.LABEL,
        ),
        _Check(
            "ExpectColumnMaxToBeBetween",
            {
                "column": schema.EVENT_TIMESTAMP,
                "min_value": _param(P_OLDEST_ALLOWED),
                "max_value": _param(P_REFERENCE_TIME),
            },
            "freshness",
            schema.EVENT_TIMESTAMP,
        ),
    ]
    for spec in schema.FEATURES:
        if spec.low is not None:
            checks.append(
                _Check(
                    "ExpectColumnMinToBeBetween", {"column": spec.name, "min_value": spec.low}, "range_low", spec.name
                )
            )
        if spec.high is not None:
            checks.append(
                _Check(
                    "ExpectColumnMaxToBeBetween", {"column": spec.name, "max_value": spec.high}, "range_high", spec.name
                )
            )
    return checks


def suite_fingerprint() -> str:
    """sha256 over the suite's definition: changes whenever any expectation changes."""
    payload: list[Any] = [SUITE_VERSION, schema.FEATURE_SCHEMA_VERSION]
    payload += [[c.expectation, c.kwargs, c.meta, c.notes] for c in _checks()]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_suite() -> ExpectationSuite:
    """The GE expectation suite of the gate (not yet attached to a context)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = [getattr(gxe, c.expectation)(**c.kwargs, meta=c.meta, notes=c.notes) for c in _checks()]
    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=expectations,
        meta={
            "suite_version": SUITE_VERSION,
            "feature_schema_version": schema.FEATURE_SCHEMA_VERSION,
            "fingerprint": suite_fingerprint(),
            "owner": "fraudops.data.validation",
        },
    )


def suite_parameters(settings: Settings, reference_time: datetime) -> dict[str, Any]:
    """The run-time values of the suite parameters (bounds from ``settings.validation``)."""
    v = settings.validation
    if v.min_rows > v.max_rows:
        raise ValueError(f"validation.min_rows ({v.min_rows}) exceeds validation.max_rows ({v.max_rows})")
    if v.fraud_rate_min > v.fraud_rate_max:
        raise ValueError(
            f"validation.fraud_rate_min ({v.fraud_rate_min}) exceeds validation.fraud_rate_max ({v.fraud_rate_max})"
        )
    return {
        P_MIN_ROWS: v.min_rows,
        P_MAX_ROWS: v.max_rows,
        P_FRAUD_RATE_MIN: v.fraud_rate_min,
        P_FRAUD_RATE_MAX: v.fraud_rate_max,
        P_OLDEST_ALLOWED: reference_time - timedelta(hours=v.max_staleness_hours),
        P_REFERENCE_TIME: reference_time,
    }


# ------------------------------------------------------------------------- the context


def get_gx_context(settings: Settings) -> AbstractDataContext:
    """The file-backed GE context under ``settings.gx_dir`` (created on first use)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=settings.gx_dir)
    bars = context.variables.progress_bars
    if bars is None or bars.get("globally", True):
        # tqdm bars on stderr would interleave with the CLI's own progress and logs.
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.variables.save()
    return context


def prepare_checkpoint(context: AbstractDataContext, *, build_docs: bool = True) -> Checkpoint:
    """Register (once) the data source, suite, validation definition and checkpoints.

    The stored suite is reused while its fingerprint matches the code; otherwise the
    suite and everything that references it are replaced. Updating a suite of ~500
    expectations in place is quadratic in GE, so this never calls ``add_or_update``.
    """
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction, ValidationAction
    from great_expectations.datasource.fluent.pandas_datasource import PandasDatasource
    from great_expectations.exceptions.exceptions import DataContextError

    try:
        found = context.data_sources.get(DATASOURCE_NAME)
    except KeyError:
        found = context.data_sources.add_pandas(DATASOURCE_NAME)
    if not isinstance(found, PandasDatasource):
        raise TypeError(
            f"GX data source {DATASOURCE_NAME!r} in {context.root_directory} is a {type(found).__name__}, "
            "not a pandas data source; remove it from great_expectations.yml"
        )
    datasource = found
    try:
        asset = datasource.get_asset(ASSET_NAME)
    except LookupError:
        asset = datasource.add_dataframe_asset(ASSET_NAME)
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION_NAME)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)

    fingerprint = suite_fingerprint()
    suite: ExpectationSuite | None
    try:
        suite = context.suites.get(SUITE_NAME)
    except DataContextError:
        suite = None
    if suite is None or (suite.meta or {}).get("fingerprint") != fingerprint:
        if suite is not None:
            log.info("replacing stored suite %s (definition changed, now v%s)", SUITE_NAME, SUITE_VERSION)
        for delete, name in (
            (context.checkpoints.delete, CHECKPOINT_NAME),
            (context.checkpoints.delete, CHECKPOINT_NAME_NO_DOCS),
            (context.validation_definitions.delete, VALIDATION_DEFINITION_NAME),
            (context.suites.delete, SUITE_NAME),
        ):
            with contextlib.suppress(DataContextError):
                delete(name)
        suite = context.suites.add(build_suite())

    try:
        validation = context.validation_definitions.get(VALIDATION_DEFINITION_NAME)
    except DataContextError:
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=VALIDATION_DEFINITION_NAME, data=batch_definition, suite=suite)
        )

    name = CHECKPOINT_NAME if build_docs else CHECKPOINT_NAME_NO_DOCS
    try:
        return context.checkpoints.get(name)
    except DataContextError:
        actions: list[ValidationAction] = [UpdateDataDocsAction(name="update_data_docs")] if build_docs else []
        return context.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[validation],
                actions=actions,
                result_format=_RESULT_FORMAT,
            )
        )


@contextlib.contextmanager
def _context_lock(settings: Settings) -> Iterator[None]:
    """Serialize GE work on one context directory across processes.

    Two pipeline runs validating at once would otherwise race to create the suite and
    rewrite the Data Docs index. An advisory ``flock``; where there is none, no lock.
    """
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with (settings.gx_dir / ".fraudops.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def data_docs_index(settings: Settings) -> Path:
    """Where the Data Docs site's index.html lives (it exists after a run with docs)."""
    return settings.gx_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def _file_url_to_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


# ---------------------------------------------------------------------------- running


def validate_transactions(
    table: pa.Table,
    settings: Settings | None = None,
    *,
    reference_time: datetime | None = None,
    build_docs: bool = True,
) -> ValidationResult:
    """Run the gate's checkpoint over ``table`` and report what failed.

    ``reference_time`` anchors the freshness check (the newest event must lie within
    ``settings.validation.max_staleness_hours`` before it, and not after it); in a DAG
    pass the end of the data interval. Without it, the newest event of the table is
    used (freshness then only guards against events from the future). It must be
    timezone-aware. Never raises on bad data: bad data is a failed result.
    """
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a pyarrow.Table, got {type(table).__name__}")
    if settings is None:
        from fraudops.settings import get_settings

        settings = get_settings()
    if reference_time is None:
        reference_time = newest_event_time(table)
    if reference_time.tzinfo is None:
        raise ValueError(f"reference_time must be timezone-aware, got {reference_time.isoformat()}")
    parameters = suite_parameters(settings, reference_time)

    import great_expectations  # noqa: F401  # the import (~15 s, once) is not the gate's run time

    started = time.perf_counter()
    frame, infinite = _frame_for_validation(table)
    with _context_lock(settings):
        context = get_gx_context(settings)
        checkpoint = prepare_checkpoint(context, build_docs=build_docs)
        outcome = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters)
        (key, suite_result), *_ = outcome.run_results.items()
        urls = context.get_docs_sites_urls(resource_identifier=key, only_if_exists=True) if build_docs else []

    arrow_types = {f.name: str(f.type) for f in table.schema}
    failures, observed = _summarize(
        suite_result.results, settings, reference_time, table.num_rows, arrow_types, infinite
    )
    statistics: dict[str, Any] = {
        **observed,
        **(suite_result.statistics or {}),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if not outcome.success and not failures:  # never a silent failure
        failures.append("validation failed without a specific finding; see the Data Docs page of this run")
    used_suite = checkpoint.validation_definitions[0].suite
    index = page = None
    if build_docs:
        index = data_docs_index(settings)
        page = next((_file_url_to_path(str(u["site_url"])) for u in urls if u.get("site_url")), None)
    result = ValidationResult(
        success=not failures,
        failures=tuple(failures),
        statistics=statistics,
        suite_name=SUITE_NAME,
        suite_version=str((used_suite.meta or {}).get("suite_version", SUITE_VERSION)),
        run_id=str(outcome.run_id.run_time.isoformat() if outcome.run_id.run_time else outcome.run_id),
        reference_time=reference_time,
        data_docs_index=index,
        data_docs_page=page,
        parameters=parameters,
    )
    level = logging.INFO if result.success else logging.WARNING
    log.log(
        level,
        "validation %s: %d rows, %d/%d expectations met in %.1fs",
        "passed" if result.success else "FAILED",
        table.num_rows,
        statistics.get("successful_expectations", 0),
        statistics.get("evaluated_expectations", 0),
        statistics["seconds"],
    )
    return result


def check_transactions(
    table: pa.Table,
    settings: Settings | None = None,
    *,
    reference_time: datetime | None = None,
    build_docs: bool = True,
) -> ValidationResult:
    """Like :func:`validate_transactions`, but raise :class:`ValidationFailed` on failure.

    This is the form a pipeline task calls: a failed gate fails the task, so nothing
    downstream runs.
    """
    return validate_transactions(
        table, settings, reference_time=reference_time, build_docs=build_docs
    ).raise_for_failure()


def validate_warehouse(
    settings: Settings | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    reference_time: datetime | None = None,
    build_docs: bool = True,
) -> ValidationResult:
    """Validate the warehouse's transactions with ``start <= event_timestamp < end``.

    The reference time of the freshness check defaults to ``end`` (the end of the data
    interval) when given, else to the newest event of the window.
    """
    from fraudops.data.warehouse import open_warehouse

    if settings is None:
        from fraudops.settings import get_settings

        settings = get_settings()
    if start is not None and end is not None and start >= end:
        raise ValueError(f"empty window: start {start.isoformat()} is not before end {end.isoformat()}")
    warehouse = open_warehouse(settings)
    try:
        table = warehouse.read_transactions(start, end)
    finally:
        warehouse.close()
    return validate_transactions(table, settings, reference_time=reference_time or end, build_docs=build_docs)


def validate_window(
    start: datetime | None,
    end: datetime | None,
    *,
    settings: Settings | None = None,
    reference_time: datetime | None = None,
    build_docs: bool = True,
) -> dict[str, Any]:
    """The gate as a pipeline task runs it: validate the window, raise on failure.

    Returns :meth:`ValidationResult.to_dict` (JSON-ready, for XCom and lineage) when the
    gate passes; raises :class:`ValidationFailed` otherwise, so nothing downstream runs.
    """
    result = validate_warehouse(settings, start=start, end=end, reference_time=reference_time, build_docs=build_docs)
    return result.raise_for_failure().to_dict()


def _frame_for_validation(table: pa.Table) -> tuple[Any, dict[str, int]]:
    """The pandas frame GE validates, with +-inf in float features turned into nulls.

    Returns the frame and the number of infinities per column (for the failure line).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    infinite: dict[str, int] = {}
    for name in schema.FEATURE_NAMES:
        if name not in table.column_names:
            continue
        column = table.column(name)
        if not pa.types.is_floating(column.type):
            continue
        is_inf = pc.is_inf(column)
        count = int(pc.sum(is_inf).as_py() or 0)
        if count:
            infinite[name] = count
            cleaned = pc.if_else(is_inf, pa.scalar(None, column.type), column)
            table = table.set_column(table.schema.get_field_index(name), name, cleaned)
    # Integer columns become pandas' nullable integers: with the default conversion a
    # single null turns an int64 column into float64, and the type check would then
    # blame the type instead of the null.
    return table.to_pandas(types_mapper=_nullable_integer_dtype), infinite


def _nullable_integer_dtype(arrow_type: pa.DataType) -> Any:
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return pd.api.types.pandas_dtype(str(arrow_type).capitalize().replace("Uint", "UInt"))
    return None


def newest_event_time(table: pa.Table) -> datetime:
    """The newest ``event_timestamp`` of ``table`` (now, in UTC, when there is none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    now = datetime.now(UTC)
    if schema.EVENT_TIMESTAMP not in table.column_names or table.num_rows == 0:
        return now
    column = table.column(schema.EVENT_TIMESTAMP)
    if not pa.types.is_timestamp(column.type):
        return now
    newest = pc.max(column).as_py()
    if not isinstance(newest, datetime):
        return now
    return newest if newest.tzinfo else newest.replace(tzinfo=UTC)


# ------------------------------------------------------------------------- reporting


def _summarize(
    results: list[Any],
    settings: Settings,
    reference_time: datetime,
    n_rows: int,
    arrow_types: dict[str, str],
    infinite: dict[str, int],
) -> tuple[list[str], dict[str, Any]]:
    """Turn GE's per-expectation results into short failure lines and observed values.

    Consequential noise is dropped: a missing column or a column of the wrong type
    reports that once (plus its nulls), not every check that then cannot run on it.
    """
    observed: dict[str, Any] = {"rows": n_rows}
    missing: set[str] = set()
    wrong_type: set[str] = set()
    for r in results:
        check = _meta(r).get("check")
        res = r.result or {}
        if check == "schema" and not r.success:
            missing.update((res.get("details") or {}).get("mismatched", {}).get("missing", []))
        elif check == "type" and not r.success:
            wrong_type.add(str(_meta(r).get("column")))
        elif check == "row_count" and r.success is not None:
            observed["rows"] = res.get("observed_value", n_rows)
        elif check == "fraud_rate" and res.get("observed_value") is not None:
            observed["fraud_rate"] = float(res["observed_value"])
        elif check == "freshness" and _as_datetime(res.get("observed_value")) is not None:
            observed["newest_event"] = _as_datetime(res["observed_value"])

    failures: list[str] = []
    if missing:
        failures.append(f"schema: missing column(s) {_shorten(sorted(missing))}")
    empty = observed.get("rows") == 0
    for r in results:
        if r.success:
            continue
        meta = _meta(r)
        check, column = meta.get("check"), meta.get("column")
        if check == "schema":
            continue
        if column in missing:
            continue
        if column in wrong_type and check not in ("type", "nulls"):
            continue
        if empty and check in ("fraud_rate", "freshness", "range_low", "range_high"):
            continue  # the row-count failure says it all
        failures.append(_describe(r, check, column, settings, reference_time, arrow_types, infinite))
    return failures, observed


def _meta(r: Any) -> dict[str, Any]:
    return dict(r.expectation_config.meta or {}) if r.expectation_config is not None else {}


def _exception_message(r: Any) -> str | None:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error").strip().splitlines()[0][:200]
    # GE keys exception info by metric id when several metrics failed.
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "error").strip().splitlines()[0][:200]
    return None


def _describe(
    r: Any,
    check: str | None,
    column: str | None,
    settings: Settings,
    reference_time: datetime,
    arrow_types: dict[str, str],
    infinite: dict[str, int],
) -> str:
    """One line naming the column and what is wrong with it."""
    res = r.result or {}
    kwargs = r.expectation_config.kwargs if r.expectation_config is not None else {}
    error = _exception_message(r)
    label = column or "table"
    if error is not None:
        return f"{label}: {check or r.expectation_config.type} could not be checked ({error})"
    observed = res.get("observed_value")
    count = res.get("unexpected_count")
    examples = _examples(res.get("partial_unexpected_list"))
    v = settings.validation
    if check == "row_count":
        return f"row count: {observed:,} rows, expected between {v.min_rows:,} and {v.max_rows:,}"
    if check == "type":
        expected = _CONTRACT_TYPE_NAMES.get(label) or " or ".join(kwargs.get("type_list") or [])
        # For object columns GE checks value by value and reports no type: name the Arrow type.
        actual = arrow_types.get(column or "") or observed
        return f"{label}: wrong type {actual}, expected {expected}"
    if check == "nulls":
        n_inf = infinite.get(label, 0)
        if n_inf:
            return f"{label}: {count:,} null or infinite value(s) ({n_inf:,} of them +-inf)"
        return f"{label}: {count:,} null value(s)"
    if check == "label_values":
        allowed = ", ".join(str(x) for x in LABEL_VALUES)
        return f"{label}: values outside {{{allowed}}} ({count:,} rows{examples})"
    if check == "duplicates":
        return f"{label}: {count:,} rows share a duplicate id{examples}"
    if check == "fraud_rate":
        return f"{label}: fraud rate {_pct(observed)} outside [{_pct(v.fraud_rate_min)}, {_pct(v.fraud_rate_max)}]"
    if check == "freshness":
        newest = _as_datetime(observed)
        if newest is None:
            return f"{label}: no event time to check freshness against {reference_time.isoformat()}"
        if newest > reference_time:
            return (
                f"{label}: newest event {newest.isoformat()} is after the reference time {reference_time.isoformat()}"
            )
        age_h = (reference_time - newest).total_seconds() / 3600
        return (
            f"{label}: stale data, newest event {newest.isoformat()} is {age_h:,.1f} h before the reference "
            f"time {reference_time.isoformat()} (limit {v.max_staleness_hours:g} h)"
        )
    if check == "range_low":
        return f"{label}: values below the lower bound {kwargs.get('min_value'):g} (minimum {observed})"
    if check == "range_high":
        return f"{label}: values above the upper bound {kwargs.get('max_value'):g} (maximum {observed})"
    return f"{label}: {r.expectation_config.type} failed (observed {observed})"


def _examples(values: list[Any] | None) -> str:
    if not values:
        return ""
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in list(dict.fromkeys(values))[:3])
    return f"; e.g. {shown}"


def _pct(value: Any) -> str:
    try:
        return f"{float(value):.2%}"
    except (TypeError, ValueError):
        return str(value)


def _shorten(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _as_datetime(value: Any) -> datetime | None:
    """GE reports a timestamp max as a pandas Timestamp, a datetime or an ISO string."""
    import pandas as pd

    if value is None or value is pd.NaT:
        return None
    to_py = getattr(value, "to_pydatetime", None)  # pandas Timestamp -> plain datetime
    if callable(to_py):
        converted = to_py()
        return converted if isinstance(converted, datetime) else None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
