"""`cdp keys …`: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cdp import keys
from cdp.cli.common import ConfigOption, console, open_runtime

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command()
def create(
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="read, collect or admin; repeat for several")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="What the key is for")] = "unnamed",
    config: ConfigOption = None,
) -> None:
    """Create a key. The key is printed once, on the last line; only its hash is stored."""
    scopes = keys.parse_scopes(scope)
    runtime = open_runtime(config)
    with runtime.transaction() as session:
        row, key = keys.create_key(session, scopes, name)
    console.print(
        f"created key {row.id} ({row.prefix}…) named {name!r} with scopes {row.scopes}",
        highlight=False,
    )
    print(key)


@app.command("list")
def list_(config: ConfigOption = None) -> None:
    """List keys (never the keys themselves: only their first characters)."""
    runtime = open_runtime(config)
    with runtime.sessions() as session:
        rows = keys.list_keys(session)
    table = Table("id", "prefix", "name", "scopes", "created", "revoked")
    for row in rows:
        table.add_row(
            str(row.id),
            row.prefix + "…",
            row.name,
            row.scopes,
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@app.command()
def revoke(
    key: Annotated[str, typer.Argument(help="The key's id or its prefix as `keys list` shows it")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key; requests with it are refused from then on."""
    runtime = open_runtime(config)
    with runtime.transaction() as session:
        row = keys.revoke_key(session, key.removesuffix("…"))
    console.print(f"revoked key {row.id} ({row.prefix}…) named {row.name!r}", highlight=False)
