"""`POST /sources/{name}/webhook`: records pushed to a source, mapped and ingested like those a
sync reads (same mapping, same rejects, same pipeline), acknowledged once committed."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdp.collect.api import Refused, read_body
from cdp.collect.messages import MAX_BATCH_BYTES, Message, MessageError, parse_message
from cdp.components import PushReceiver
from cdp.db.models import SourceReject, utcnow
from cdp.errors import Unauthorized, UserError
from cdp.ingest.writer import Writer
from cdp.runtime import Runtime
from cdp.sources.mapping import MappingError, record_message
from cdp.sources.spec import Source, load_sources

log = logging.getLogger(__name__)


def webhook_routes(runtime: Runtime, writer: Writer) -> list[Route]:
    receivers = {
        s.name: s
        for s in load_sources(runtime.config, runtime.plugins)
        if isinstance(s.connector, PushReceiver)
    }

    async def receive(request: Request) -> Response:
        source = receivers.get(request.path_params["name"])
        if source is None:
            return _refused(404, f"no webhook source is named {request.path_params['name']!r}")
        assert isinstance(source.connector, PushReceiver)
        try:
            body = await read_body(request, MAX_BATCH_BYTES)
            records = source.connector.receive(request.headers, body, time.time())
        except Unauthorized as exc:
            return _refused(401, str(exc))
        except UserError as exc:
            return _refused(400, str(exc))
        except Refused as refused:  # over the size limit, bad encoding
            return refused.response
        messages, errors = _messages(source, records)
        if errors:
            await run_in_threadpool(_store_rejects, runtime, source, records, errors)
        accepted = await writer.submit(messages, source.name) if messages else []
        duplicates = sum(1 for a in accepted if a.event_id is None)
        payload: dict[str, Any] = {
            "success": not errors,
            "accepted": len(accepted) - duplicates,
            "duplicates": duplicates,
        }
        if errors:
            payload["errors"] = [{"index": i, "message": m} for i, m in errors]
        return JSONResponse(payload, status_code=400 if errors else 200)

    return [Route("/sources/{name}/webhook", receive, methods=["POST"])]


def _messages(source: Source, records: list[Any]) -> tuple[list[Message], list[tuple[int, str]]]:
    received_at = datetime.now(UTC)
    messages, errors = [], []
    for index, record in enumerate(records):
        # The record's content is its key: the same record pushed twice is imported once.
        key = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
        try:
            body = record_message(source.spec, record, key)
            messages.append(parse_message(body, None, received_at, index))
        except (MappingError, MessageError) as exc:
            errors.append((index, str(exc)))
    return messages, errors


def _store_rejects(
    runtime: Runtime, source: Source, records: list[Any], errors: list[tuple[int, str]]
) -> None:
    now = utcnow()
    with runtime.writing() as session:
        session.execute(
            insert(SourceReject),
            [
                {
                    "source": source.name,
                    "run_started_at": now,
                    "location": "webhook",
                    "row_number": index,
                    "raw": json.dumps(records[index], default=str)[:100_000],
                    "reason": reason[:4000],
                    "created_at": now,
                }
                for index, reason in errors
            ],
        )


def _refused(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"success": False, "errors": [{"index": None, "message": message}]}, status_code=status
    )
