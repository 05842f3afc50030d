"""The /graphql endpoint: API-key authentication in front of strawberry's ASGI view, for HTTP
requests and for WebSocket connections (subscriptions)."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET, UnsetType

from cdp.graphql.context import Context
from cdp.graphql.schema import build_schema
from cdp.ingest.writer import Writer
from cdp.keys import Principal, authenticate
from cdp.keys import Scope as KeyScope
from cdp.runtime import Runtime

PATH_SHOWN = 4
"""How many levels of a too-deeply nested body's path an error names."""
SCANNED = 1_000_000
"""How much of a too-deeply nested body is scanned for that path."""


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
                principal = await self._principal(request.headers.get("authorization"))
                if principal is None:
                    await _unauthorized(request)(scope, receive, send)
                    return
                scope.setdefault("state", {})["principal"] = principal
        elif scope["type"] == "websocket":
            # The key comes in the upgrade request's header or, for clients that cannot set
            # headers (browsers), in the connection_init payload: see `on_ws_connect`.
            header = WebSocket(scope, receive, send).headers.get("authorization")
            if header is not None:
                principal = await self._principal(header)
                if principal is None:  # closing before accepting refuses with HTTP 403
                    await WebSocket(scope, receive, send).close(code=1008)
                    return
                scope.setdefault("state", {})["principal"] = principal
        await super().__call__(scope, receive, send)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Accept the connection_init of an authenticated socket with the read scope; any other
        gets close code 4403 (graphql-transport-ws) or a connection_error (graphql-ws)."""
        principal = context.principal
        if principal is None:
            params = context.connection_params or {}
            header = next((v for k, v in params.items() if k.lower() == "authorization"), None)
            principal = await self._principal(header if isinstance(header, str) else None)
        if principal is None or not principal.allows(KeyScope.READ):
            raise ConnectionRejectionError(
                {
                    "message": "send an API key with the 'read' scope: the header "
                    '`Authorization: Bearer <key>`, or {"Authorization": "Bearer <key>"} as '
                    "the connection_init payload"
                }
            )
        context.principal = principal
        return UNSET

    async def _principal(self, header: str | None) -> Principal | None:
        scheme, _, key = (header or "").partition(" ")
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

    # --- strict JSON ------------------------------------------------------------------------

    def decode_json(self, data: str | bytes) -> object:
        """Bodies and WebSocket messages: no NaN or Infinity (no JSON encoder writes them back,
        PostgreSQL refuses them), and nesting too deep to decode is refused, not crashed on."""
        try:
            text = data.decode() if isinstance(data, bytes) else data
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"not UTF-8 ({exc.reason})", "", exc.start) from None
        try:
            return _DECODER.decode(text)
        except RecursionError:
            raise _TooDeep(text) from None
        except _NotANumber as exc:
            raise json.JSONDecodeError(str(exc), text, 0) from None

    def parse_json(self, data: str | bytes) -> Any:
        try:
            return self.decode_json(data)
        except _TooDeep as exc:
            raise _BadRequest(f"{exc.path}: nested too deeply" if exc.path else exc.msg) from None
        except json.JSONDecodeError as exc:
            raise _BadRequest(f"the request body is not valid JSON: {exc}") from None

    async def run(
        self,
        request: Request | WebSocket,
        context: Context | UnsetType = UNSET,
        root_value: UnsetType | None = UNSET,
    ) -> Response | WebSocket:
        try:
            return await super().run(request, context, root_value)  # type: ignore[arg-type]
        except _BadRequest as exc:
            return JSONResponse(
                {"errors": [{"message": str(exc), "extensions": {"code": "BAD_REQUEST"}}]},
                status_code=400,
            )


class _BadRequest(Exception):
    """A request body refused with a message for the client."""


class _NotANumber(ValueError):
    pass


class _TooDeep(json.JSONDecodeError):
    """JSON nested deeper than the decoder can recurse; `path` says where (its first levels)."""

    def __init__(self, text: str) -> None:
        super().__init__("JSON nested too deeply", text, 0)
        self.path = _deep_path(text)


def _refuse_constant(name: str) -> Any:
    raise _NotANumber(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NotANumber(f"number {literal[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _deep_path(text: str) -> str:
    """The path (first levels) of the most deeply nested value of a JSON text that could not be
    decoded for its depth: a scan of brackets, strings and commas, no decoding."""
    path: list[str | int] = []
    deepest: list[str | int] = []
    kinds: list[str] = []
    expect_key = False
    i, n = 0, min(len(text), SCANNED)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if expect_key and kinds:
                try:
                    path[-1] = json.loads(text[i : j + 1])
                except ValueError:
                    path[-1] = "?"
                expect_key = False
            i = j + 1
            continue
        if c in "{[":
            kinds.append(c)
            path.append(0 if c == "[" else "")
            expect_key = c == "{"
            if len(path) > len(deepest):
                deepest = list(path)
        elif c in "}]" and kinds:
            kinds.pop()
            path.pop()
        elif c == "," and kinds:
            if kinds[-1] == "[":
                path[-1] = int(path[-1]) + 1
            else:
                expect_key = True
        i += 1
    out = ""
    for part in deepest[:-1][:PATH_SHOWN]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out + ("…" if len(deepest) - 1 > PATH_SHOWN else "")


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
