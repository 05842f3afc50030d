"""`cdp plugins …`: what is installed and what it supplies."""

from __future__ import annotations

import typer
from rich.table import Table

from cdp.cli.common import ConfigOption, console
from cdp.config import load_config
from cdp.plugins import PluginHost

app = typer.Typer(help="Installed plugins.", no_args_is_help=True)


@app.command("list")
def list_(config: ConfigOption = None) -> None:
    """List installed plugins: version, whether enabled, the components each supplies."""
    # Report plugins that fail to load instead of stopping at the first one.
    host = PluginHost(load_config(config).plugins.model_copy(update={"on_error": "skip"}))
    table = Table("plugin", "version", "enabled", "components", "error")
    for info in sorted(host.plugins.values(), key=lambda p: p.name):
        components = ", ".join(f"{kind}:{name}" for kind, name in info.components)
        table.add_row(
            info.name, info.version, "yes" if info.enabled else "no", components, info.error or ""
        )
    console.print(table)
