"""The ASGI application: every HTTP entry point, assembled from the runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute

from cdp.collect.api import collection_routes
from cdp.graphql.view import GraphQLView
from cdp.health import healthz
from cdp.ingest.writer import Writer
from cdp.metrics import Metrics, MetricsMiddleware
from cdp.runtime import Runtime
from cdp.scheduler import Scheduler, scheduled_jobs
from cdp.sources.webhook import webhook_routes


def create_app(runtime: Runtime) -> Starlette:
    metrics = Metrics()
    writer = Writer(runtime)
    graphql = GraphQLView(runtime, writer)
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *collection_routes(runtime, writer),
        *webhook_routes(runtime, writer),
        Route("/healthz", healthz(runtime), methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings = runtime.config.scheduler
        # A production deployment sets in_server = false and runs `cdp worker` processes.
        jobs = scheduled_jobs(runtime) if settings.in_server else []
        app.state.scheduler = scheduler = Scheduler(jobs, settings.tick_seconds)
        writer.start()
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            writer.stop()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics, routes=routes)],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.writer = writer
    return app
