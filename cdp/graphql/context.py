"""The typed request context every resolver receives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import strawberry
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from cdp.graphql.loaders import Loaders
from cdp.ingest.writer import Writer
from cdp.keys import Principal
from cdp.runtime import Runtime

T = TypeVar("T")


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket
    """The sub-response of an HTTP request; the socket itself over WebSocket."""
    runtime: Runtime
    writer: Writer
    principal: Principal | None
    connection_params: dict[str, Any] | None = None
    """WebSocket only: the `connection_init` payload (strawberry sets it)."""
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.read, self.refresh_scores)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run `work` with a session in a worker thread, so database I/O never blocks the loop."""

        def run() -> T:
            with self.runtime.sessions() as session:
                return work(session)

        return await run_in_threadpool(run)

    async def refresh_scores(self, profile_ids: Sequence[str]) -> None:
        """Score on demand the profiles whose model scores are missing or stale, before
        `Profile.scores` reads them."""
        if self.runtime.config.models:  # without models nothing is stale (and no scikit-learn)
            from cdp.models.service import refresh_quietly

            await run_in_threadpool(refresh_quietly, self.runtime, profile_ids)

    async def write(self, work: Callable[[Session], T]) -> T:
        """Like `read`, in a transaction that commits when `work` returns."""

        def run() -> T:
            with self.runtime.writing() as session:
                return work(session)

        return await run_in_threadpool(run)


Info = strawberry.Info[Context, Any]
