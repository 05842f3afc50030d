"""`cdp models …`: the configured enrichment models, training, scoring and rollback."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cdp.cli.common import ConfigOption, config_file, console, open_runtime
from cdp.models import catalog
from cdp.models.features import count_profiles
from cdp.models.registry import load_models
from cdp.models.report import report

# cdp.models.service is imported in the commands that use it: it brings scikit-learn, which
# takes a second or two to import, and every other `cdp` command would pay for it.

app = typer.Typer(
    help="Enrichment models: list, train (prints the evaluation), score, roll back.",
    no_args_is_help=True,
)
NameArgument = Annotated[str, typer.Argument(help="The model's name in [[models]]")]


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _headline(metrics: dict[str, Any]) -> str:
    if metrics.get("task") == "classification":
        return f"AUC {metrics['auc']:.3f}, log-loss {metrics['log_loss']:.3f}"
    if metrics.get("task") == "regression":
        return f"R² {metrics['r2']:.3f}, MAE {metrics['mae']:.2f}"
    silhouette = metrics.get("silhouette")
    return f"silhouette {silhouette:.3f}" if silhouette is not None else "silhouette n/a"


@app.command("list")
def list_(config: ConfigOption = None) -> None:
    """List the configured models with their active version and last scoring."""
    runtime = open_runtime(config)
    try:
        load_models(runtime.config, runtime.plugins, config_file(config))  # errors name the file
        found = catalog.overview(runtime)
    finally:
        runtime.close()
    table = Table(
        "name", "type", "task", "outputs", "active", "versions", "trained", "held-out",
        "scored", "schedule",
    )  # fmt: skip
    for item in found:
        active = item.active
        state = item.state
        table.add_row(
            item.model.name,
            item.model.spec.type,
            item.model.enricher.task,
            ", ".join(o.name for o in item.model.outputs),
            str(active.version) if active else "none",
            str(len(item.versions)),
            f"{active.trained_at:%Y-%m-%d %H:%M}" if active else "",
            _headline(active.metrics) if active else "",
            f"{state.scored_at:%Y-%m-%d %H:%M} (v{state.scored_version}, {state.scored_profiles:,})"
            if state and state.scored_at
            else "never",
            item.model.spec.schedule or "",
        )
    console.print(table)


@app.command()
def versions(name: NameArgument, config: ConfigOption = None) -> None:
    """List a model's stored versions with their held-out metrics."""
    runtime = open_runtime(config)
    try:
        [item] = catalog.overview(runtime, [catalog.get_model(runtime, name).name])
    finally:
        runtime.close()
    table = Table("version", "active", "trained", "cut-off", "examples", "held-out", "sha256")
    current = item.active.version if item.active else None
    for v in item.versions:
        table.add_row(
            str(v.version),
            "yes" if v.version == current else "",
            f"{v.trained_at:%Y-%m-%d %H:%M}",
            f"{v.cutoff:%Y-%m-%d %H:%M}",
            f"{v.metrics['examples']:,}",
            _headline(v.metrics),
            v.artefact_sha256[:12],
        )
    console.print(table)


@app.command()
def train(name: NameArgument, config: ConfigOption = None) -> None:
    """Train a new version on the store's data, make it active, print its evaluation."""
    from cdp.models import service

    runtime = open_runtime(config)
    try:
        service.get_model(runtime, name)  # an unknown name fails before the bar shows
        with _bar() as bar:
            with runtime.engine.connect() as conn:
                total = count_profiles(conn)
            task = bar.add_task(f"{name}: features", total=max(total, 1))
            version = service.train(
                runtime, name, progress=lambda done: bar.update(task, completed=done)
            )
            bar.update(task, completed=max(total, 1))
    finally:
        runtime.close()
    console.print(report(version), highlight=False)


@app.command()
def score(name: NameArgument, config: ConfigOption = None) -> None:
    """Score every profile with the model's active version."""
    from cdp.models import service

    runtime = open_runtime(config)
    try:
        service.get_model(runtime, name)
        with _bar() as bar:
            task = bar.add_task(f"{name}: scoring", total=None)

            def report_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = service.score(runtime, name, progress=report_progress)
            if bar.tasks[0].total is None:  # no profiles at all
                bar.update(task, total=1, completed=1)
    finally:
        runtime.close()
    console.print(str(summary), highlight=False)


@app.command()
def rollback(
    name: NameArgument,
    version: Annotated[int, typer.Argument(help="The version to make active", min=1)],
    rescore: Annotated[
        bool, typer.Option("--score", help="Rescore every profile with it now")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Make an earlier (or any stored) version the active one."""
    from cdp.models import service

    runtime = open_runtime(config)
    try:
        row = service.rollback(runtime, name, version)
        console.print(
            f"model {row.model}: version {row.version} (trained {row.trained_at:%Y-%m-%d %H:%M}"
            f" UTC, {_headline(row.metrics)}) is active",
            highlight=False,
        )
        if rescore:
            console.print(str(service.score(runtime, name)), highlight=False)
        else:
            console.print(
                f"profiles' scores follow when read, or all at once with `cdp models score {name}`",
                highlight=False,
            )
    finally:
        runtime.close()
