"""What every command shares: the --config option and opening the runtime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cdp.config import Config, load_config
from cdp.runtime import Runtime

console = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file [default: $CDP_CONFIG, else ./cdp.toml if present]",
        dir_okay=False,
        show_default=False,
    ),
]


def open_runtime(config: Config | Path | None, check_schema: bool = True) -> Runtime:
    if not isinstance(config, Config):
        config = load_config(config)
    return Runtime.start(config, check_schema=check_schema)


def config_file(config: Path | None) -> str:
    """The file config errors should name."""
    return str(config or os.environ.get("CDP_CONFIG", "cdp.toml"))
