"""`cdp sources …`: the configured source connectors, their state, and running an import."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from cdp.cli.common import ConfigOption, config_file, console, open_runtime
from cdp.db.models import SourceState, utcnow
from cdp.sources.claim import is_stale
from cdp.sources.spec import load_sources
from cdp.sources.sync import SyncProgress, sync_source

app = typer.Typer(help="Import from other systems: list sources, run a sync.", no_args_is_help=True)


@app.command("list")
def list_(config: ConfigOption = None) -> None:
    """List the configured sources with their last run."""
    runtime = open_runtime(config)
    try:
        sources = load_sources(runtime.config, runtime.plugins, config_file(config))
        with runtime.sessions() as session:
            states = {s.name: s for s in session.scalars(select(SourceState))}
    finally:
        runtime.close()
    table = Table(
        "name", "type", "kind", "status", "last run", "checkpoint", "read", "imported",
        "duplicates", "merged", "rejected", "last error",
    )  # fmt: skip
    now = utcnow()
    for source in sources:
        state = states.get(source.name)
        if state is None:
            table.add_row(source.name, source.spec.type, source.spec.kind, "never run")
            continue
        status = state.status
        if state.running_since is not None and is_stale(state, now):
            status = "interrupted"
        table.add_row(
            source.name,
            source.spec.type,
            source.spec.kind,
            status,
            f"{state.last_run_at:%Y-%m-%d %H:%M}" if state.last_run_at else "",
            checkpoint_summary(state.checkpoint),
            f"{state.rows_read:,}",
            f"{state.rows_imported:,}",
            f"{state.rows_duplicate:,}",
            f"{state.rows_merged:,}",
            f"{state.rows_rejected:,}",
            state.last_error or "",
        )
    console.print(table)


def checkpoint_summary(checkpoint: str | None) -> str:
    """A short reading of a checkpoint: file connectors' JSON is summarised, others cut."""
    if checkpoint is None:
        return "start"
    try:
        data = json.loads(checkpoint)
    except ValueError:
        data = None
    if isinstance(data, dict) and "done" in data:
        done = len(data.get("done") or {})
        text = f"{done} file{'s' if done != 1 else ''} done"
        current = data.get("file")
        if isinstance(current, dict):
            text += f"; {current.get('path')} at line {current.get('line'):,}"
        return text
    return checkpoint if len(checkpoint) <= 40 else checkpoint[:39] + "…"


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        rows = task.fields.get("rows", 0)
        rate = rows / task.elapsed if task.elapsed else 0.0
        return Text(f"{rows:,} rows, {rate:,.0f} rows/s", style="progress.data.speed")


@app.command()
def sync(
    name: Annotated[str, typer.Argument(help="The source's name in [[sources]]")],
    config: ConfigOption = None,
) -> None:
    """Import what the source holds after its last committed checkpoint."""
    runtime = open_runtime(config)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(name, total=None, rows=0)

            def report(progress: SyncProgress) -> None:
                bar.update(
                    task, completed=progress.done or 0, total=progress.total,
                    rows=progress.summary.read,
                )  # fmt: skip

            summary = sync_source(runtime, name, report, config_file(config))
            if summary.read == 0 or bar.tasks[0].total is None:
                bar.update(task, total=1, completed=1)
    finally:
        runtime.close()
    console.print(str(summary), highlight=False)
