"""The collection API: Segment's HTTP tracking API, so Segment's and RudderStack's client
libraries work unchanged.

`POST /v1/identify|track|page|screen|group|alias|batch` (and `/v1/import`, an alias of batch),
with a `collect`-scope key as the HTTP Basic user name (or as `writeKey` in the body). A message
is acknowledged only once it is committed. In a batch, valid messages are accepted and invalid
ones reported one by one, with a 400 naming each one's index and field.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import zlib
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from cdp.collect.messages import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    FieldError,
    MessageError,
    parse_batch,
    parse_single,
)
from cdp.ingest.writer import Writer
from cdp.keys import Principal, Scope, authenticate
from cdp.runtime import Runtime

log = logging.getLogger(__name__)
MAX_ERRORS = 100

# analytics.js posts to one-letter paths; `import` is the older name of batch.
ALIASES = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": "batch",
    "import": "batch",
}


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.response = JSONResponse(
            {"success": False, "errors": [{"index": None, "field": None, "message": message}]},
            status_code=status,
            headers=headers,
        )


def collection_routes(runtime: Runtime, writer: Writer) -> list[Mount]:
    async def collect(request: Request) -> Response:
        kind = request.path_params["kind"]
        kind = ALIASES.get(kind, kind)
        if kind != "batch" and kind not in MESSAGE_TYPES:
            return Refused(404, f"unknown endpoint /v1/{kind}").response
        received_at = datetime.now(UTC)
        limit = MAX_BATCH_BYTES if kind == "batch" else MAX_MESSAGE_BYTES
        try:
            body = await read_body(request, limit)
            principal = await _principal(runtime, request, body)
        except Refused as refused:
            return refused.response
        try:
            if kind == "batch":
                messages, errors = parse_batch(body, received_at)
            else:
                messages, errors = [parse_single(body, kind, received_at)], []
        except MessageError as exc:
            return _result(0, 0, exc.errors)
        try:
            accepted = await writer.submit(messages, principal.name) if messages else []
        except Exception:
            log.exception("could not store %d messages", len(messages))
            return Refused(503, "the events could not be stored; retry").response
        duplicates = sum(1 for a in accepted if a.event_id is None)
        return _result(len(accepted) - duplicates, duplicates, errors)

    # Browsers (analytics.js) post from other origins: CORS on these routes only.
    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
        max_age=86400,
    )
    return [Mount("/v1", routes=[Route("/{kind}", collect, methods=["POST"])], middleware=[cors])]


def _result(accepted: int, duplicates: int, errors: list[FieldError]) -> JSONResponse:
    body: dict[str, Any] = {"success": not errors, "accepted": accepted, "duplicates": duplicates}
    if errors:
        # 500 KB of `{}` is 100,000 bad messages: report the first ones, and how many in all.
        body["errorCount"] = len(errors)
        body["errors"] = [
            {"index": e.index, "field": e.field, "message": str(e)} for e in errors[:MAX_ERRORS]
        ]
    return JSONResponse(body, status_code=400 if errors else 200)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes (after gzip/deflate decoding) without reading more."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"request body over the {limit // 1024} KB limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"request body over the {limit // 1024} KB limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        body = _decode(body, encoding, limit)
    elif encoding != "identity":
        raise Refused(415, f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    return body


def _decode(data: bytes, encoding: str, limit: int) -> bytes:
    """Decompress, refusing past `limit` bytes as it goes (a zip bomb costs nothing) and
    refusing truncated or padded streams; several gzip members are read one after another."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    out = bytearray()
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            out += decoder.decompress(data, limit + 1 - len(out))
        except zlib.error:
            raise Refused(400, f"body is not valid {encoding} data") from None
        if len(out) > limit or decoder.unconsumed_tail:
            raise Refused(413, f"decoded request body over the {limit // 1024} KB limit")
        if not decoder.eof:
            raise Refused(400, f"body is not valid {encoding} data: it ends too early")
        data = decoder.unused_data
        if not data:
            return bytes(out)
        if encoding != "gzip":
            raise Refused(400, f"body is not valid {encoding} data: junk after the end")


async def _principal(runtime: Runtime, request: Request, body: bytes) -> Principal:
    key = _basic_user(request.headers.get("authorization", "")) or _body_write_key(body)
    if not key:
        raise Refused(
            401,
            "missing write key: send a collect key as the HTTP Basic user name",
            {"WWW-Authenticate": 'Basic realm="cdp"'},
        )

    def lookup() -> Principal | None:
        with runtime.sessions() as session:
            return authenticate(session, key)

    principal = await run_in_threadpool(lookup)
    if principal is None:
        raise Refused(
            401, "invalid or revoked write key", {"WWW-Authenticate": 'Basic realm="cdp"'}
        )
    if not principal.allows(Scope.COLLECT):
        raise Refused(403, "this key cannot send events: it needs the 'collect' scope")
    return principal


def _basic_user(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def _body_write_key(body: bytes) -> str | None:
    # analytics.js can send the key in the body instead of the header.
    if b'"writeKey"' not in body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    key = data.get("writeKey") if isinstance(data, dict) else None
    return key if isinstance(key, str) and key else None
