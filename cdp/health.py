"""/healthz: the process is up and its database answers."""

from __future__ import annotations

import logging

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from cdp.runtime import Runtime

log = logging.getLogger(__name__)


def healthz(runtime: Runtime):
    def check() -> None:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def endpoint(request: Request) -> JSONResponse:
        try:
            await run_in_threadpool(check)
        except Exception:
            log.exception("health check: database unreachable")
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return endpoint
