"""The `cdp` command line."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from cdp.cli import keys, models, plugins, server, sources, worker
from cdp.errors import CDPError

app = typer.Typer(
    help="Customer data platform server.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold secrets
)
app.command()(server.serve)
app.command()(server.migrate)
app.command()(server.demo)
app.command()(worker.worker)
app.add_typer(plugins.app, name="plugins")
app.add_typer(keys.app, name="keys")
app.add_typer(sources.app, name="sources")
app.add_typer(models.app, name="models")


def main() -> None:
    try:
        app()
    except CDPError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
