"""``fraudops features ...`` end to end on the embedded default (DuckDB offline, SQLite online).

Each command's stdout must be clean JSON (Feast's own progress goes to stderr), and its
failures one specific line with a non-zero exit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fraudops import schema
from fraudops.cli.main import app

runner = CliRunner()


def _run(*args: str, ok: bool = True) -> Any:
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
        return json.loads(result.stdout)
    assert result.exit_code != 0, f"{args} should have failed:\n{result.output}"
    return " ".join(result.output.split())  # the console wraps long lines


def test_apply_materialize_training_set_online(
    fraudops_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FRAUDOPS_REDIS_URL", raising=False)
    assert "run `fraudops features apply` first" in _run(
        "features", "materialize", "--incremental", "--no-export", ok=False
    )

    _run("data", "generate", "--rows", "2000", "--days", "7", "--start", "2026-09-01")
    applied = _run("features", "apply")
    assert applied["feature_service"] == "fraud_model_v1"
    assert (applied["offline_store"], applied["online_store"]) == ("duckdb", "sqlite")

    assert "--start is required" in _run("features", "materialize", "--end", "2026-09-05", ok=False)
    first = _run("features", "materialize-incremental", "--end", "2026-09-05")
    assert first["incremental"] and first["rows"] > 0 and first["keys"] > 0
    second = _run("features", "materialize", "--incremental", "--end", "2026-09-09")
    assert second["start"] == first["end"]
    full = _run("features", "materialize", "--start", "2026-09-01", "--end", "2026-09-09", "--no-export")
    again = _run("features", "materialize", "--start", "2026-09-01", "--end", "2026-09-09", "--no-export")
    assert (full["rows"], full["keys"]) == (again["rows"], again["keys"]) == (2000, again["keys"])

    out = tmp_path / "train.parquet"
    made = _run("features", "training-set", "--out", str(out))
    table = pq.read_table(out)
    assert made["rows"] == table.num_rows == 2000
    assert table.column_names == [
        schema.TRANSACTION_ID,
        schema.CARD_ID,
        schema.EVENT_TIMESTAMP,
        schema.LABEL,
        *schema.FEATURE_NAMES,
    ]

    card = table.column(schema.CARD_ID)[0].as_py()
    looked_up = _run("features", "online", str(card), "42")
    assert looked_up["backend"] == "sqlite"
    assert looked_up["missing"] == [42]
    assert sorted(looked_up["features"][str(card)]) == sorted(schema.CARD_FEATURE_NAMES)

    assert "not an ISO-8601" in _run("features", "materialize", "--start", "yesterday", ok=False)
    assert "is after end" in _run("features", "materialize", "--start", "2026-09-09", "--end", "2026-09-01", ok=False)


def test_commands_on_an_empty_warehouse_say_what_to_run(fraudops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDOPS_REDIS_URL", raising=False)
    assert "fraudops data generate" in _run("features", "export", ok=False)
    assert "fraudops data generate" in _run("features", "apply", ok=False)
