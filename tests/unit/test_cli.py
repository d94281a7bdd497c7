"""The CLI starts fast because nothing heavy is imported until a command needs it."""

import subprocess
import sys

HEAVY = (
    "torch",
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "airflow",
    "dvc",
    "pandas",
    "duckdb",
    "onnxruntime",
)


def test_importing_the_package_and_cli_loads_no_heavy_library() -> None:
    code = (
        "import sys, fraudops, fraudops.settings, fraudops.schema, fraudops.cli.main\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"heavy modules imported at CLI start: {out}"


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fraudops.cli.main", "--help"], capture_output=True, text=True, check=True
    )
    for stage in ("data", "features"):
        assert stage in out.stdout
