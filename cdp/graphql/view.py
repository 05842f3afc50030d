"""The /graphql endpoint: API-key authentication in front of strawberry's ASGI view."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL

from cdp.graphql.context import Context
from cdp.graphql.schema import build_schema
from cdp.ingest.writer import Writer
from cdp.keys import Principal, authenticate
from cdp.runtime import Runtime


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, runtime: Runtime, writer: Writer) -> None:
        dev = runtime.config.development
        super().__init__(
            build_schema(runtime.config),
            graphql_ide="graphiql" if dev else None,
            allow_queries_via_get=False,
        )
        self.runtime = runtime
        self.writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            if not (request.method == "GET" and self.runtime.config.development):
                principal = await self._principal(request)
                if principal is None:
                    await _unauthorized(request)(scope, receive, send)
                    return
                scope.setdefault("state", {})["principal"] = principal
        await super().__call__(scope, receive, send)

    async def _principal(self, request: Request) -> Principal | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None

        def lookup() -> Principal | None:
            with self.runtime.sessions() as session:
                return authenticate(session, key.strip())

        return await run_in_threadpool(lookup)

    async def get_context(self, request: Any, response: Any) -> Context:
        principal = request.scope.get("state", {}).get("principal")
        return Context(
            request=request,
            response=response,
            runtime=self.runtime,
            writer=self.writer,
            principal=principal,
        )


def _unauthorized(request: Request) -> Response:
    has_header = "authorization" in request.headers
    message = (
        "invalid, revoked or malformed API key"
        if has_header
        else "missing API key: send the header `Authorization: Bearer <key>`"
    )
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="cdp"'},
    )
