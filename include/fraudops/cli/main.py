"""Entry point: ``fraudops <stage> ...``."""

from __future__ import annotations

import typer

from fraudops import __version__
from fraudops.cli import airflow as airflow_cli
from fraudops.cli import data, features, monitor
from fraudops.cli import model as model_cli
from fraudops.cli import registry as registry_cli
from fraudops.cli._common import setup_logging

app = typer.Typer(
    name="fraudops",
    help="A fraud-detection model from data to production: generate, validate, snapshot, features, "
    "train, promote, export, serve, monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(monitor.app, name="monitor")
app.command("train")(model_cli.train)
app.command("export")(model_cli.export)
app.command("serve")(__import__("fraudops.cli.serve", fromlist=["serve"]).serve)
app.command("promote")(registry_cli.promote)
app.command("rollback")(registry_cli.rollback)
app.add_typer(registry_cli.app, name="registry")
app.add_typer(airflow_cli.app, name="airflow")
app.command("demo")(__import__("fraudops.cli.demo", fromlist=["demo"]).demo)
app.command("lifecycle")(__import__("fraudops.cli.lifecycle", fromlist=["lifecycle"]).lifecycle)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fraudops {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """fraudops: the whole lifecycle of a fraud model, one command per stage."""
    setup_logging(verbose)


if __name__ == "__main__":
    app(prog_name="fraudops")
