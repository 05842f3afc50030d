"""The ASGI application: every HTTP entry point, assembled from the runtime."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from cdp.graphql.view import GraphQLView
from cdp.health import healthz
from cdp.metrics import Metrics, MetricsMiddleware
from cdp.runtime import Runtime


def create_app(runtime: Runtime) -> Starlette:
    metrics = Metrics()
    graphql = GraphQLView(runtime)
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Route("/healthz", healthz(runtime), methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics, routes=routes)],
    )
    app.state.runtime = runtime
    return app
