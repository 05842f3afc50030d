"""`cdp serve`, `cdp migrate` and `cdp demo`."""

from __future__ import annotations

from typing import Annotated

import typer

from cdp import keys
from cdp.cli.common import ConfigOption, config_file, console, open_runtime
from cdp.config import Config, load_config
from cdp.db.engine import make_engine
from cdp.db.migrate import current_revision, upgrade
from cdp.decisions.catalogue import load_providers
from cdp.demo import load_demo
from cdp.logs import configure_logging
from cdp.models.registry import load_models
from cdp.sources.spec import load_sources

HostOption = Annotated[str | None, typer.Option(help="Interface to bind [default: server.host]")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on [default: server.port]")]


def serve(host: HostOption = None, port: PortOption = None, config: ConfigOption = None) -> None:
    """Run the HTTP server (GraphQL at /graphql, /healthz, /metrics)."""
    _serve(load_config(config), host, port, config_file(config))


def migrate(config: ConfigOption = None) -> None:
    """Create or upgrade the database schema to this version's."""
    cfg = load_config(config)
    engine = make_engine(cfg.database.url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    state = "already at" if before == after else f"upgraded from {before or 'empty'} to"
    console.print(f"database {where}: {state} revision {after}", highlight=False)


def demo(
    serve: Annotated[
        bool, typer.Option("--serve", help="Then start the server in development mode")
    ] = False,
    profiles: Annotated[int, typer.Option(min=1, max=100_000, help="How many demo profiles")] = 200,
    host: HostOption = None,
    port: PortOption = None,
    config: ConfigOption = None,
) -> None:
    """Load a demo data set (migrating the database first); print a read key and a collect key."""
    cfg = load_config(config)
    if serve:
        cfg = cfg.model_copy(update={"mode": "development"})
    cfg = cfg.model_copy(
        update={"database": cfg.database.model_copy(update={"auto_migrate": True})}
    )
    runtime = open_runtime(cfg)
    loaded = load_demo(runtime, profiles=profiles)
    with runtime.transaction() as session:
        _, read_key = keys.create_key(session, frozenset({keys.Scope.READ}), "demo read key")
        _, collect_key = keys.create_key(
            session, frozenset({keys.Scope.COLLECT}), "demo collect key"
        )
    runtime.close()
    console.print("demo data loaded" if loaded else "demo data was already loaded")
    console.print(
        f"read key:    [bold]{read_key}[/]\ncollect key: [bold]{collect_key}[/]", highlight=False
    )
    if serve:
        h, p = host or cfg.server.host, port or cfg.server.port
        console.print(
            f"GraphiQL: [bold]http://{h}:{p}/graphql[/] — add the header "
            f'{{"Authorization": "Bearer {read_key}"}} in its Headers tab',
            highlight=False,
        )
        _serve(cfg, host, port, config_file(config))


def _serve(cfg: Config, host: str | None, port: int | None, file: str) -> None:
    import uvicorn

    from cdp.app import create_app

    configure_logging()
    runtime = open_runtime(cfg)
    load_sources(cfg, runtime.plugins, file)  # a bad [[sources]] entry stops the start, named
    load_providers(cfg, runtime.plugins, file)  # … and so does a bad [[content_providers]] one
    load_models(cfg, runtime.plugins, file)  # … and a bad [[models]] entry
    uvicorn.run(
        create_app(runtime),
        host=host or cfg.server.host,
        port=port or cfg.server.port,
        log_config=None,
        server_header=False,
    )
