"""`syncSource`: an admin starts an import now."""

from __future__ import annotations

import strawberry
from starlette.concurrency import run_in_threadpool

from cdp.db.models import SourceState
from cdp.errors import CDPError, UserError
from cdp.graphql.context import Info
from cdp.graphql.permissions import ADMIN
from cdp.graphql.types.source import Source
from cdp.sources.spec import find_source
from cdp.sources.sync import start_sync


@strawberry.type
class SourceMutations:
    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Start a sync of the source now; it runs in the background, and `sources` "
        "shows its progress. Refused while another sync of it runs.",
    )
    async def sync_source(self, info: Info, name: str) -> Source:
        runtime = info.context.runtime

        def start() -> Source:
            try:
                source = find_source(runtime.config, runtime.plugins, name)
                start_sync(runtime, source)
            except CDPError as exc:  # unknown name, busy source: the admin's to act on
                raise UserError(f"name: {exc}") from None
            with runtime.sessions() as session:
                return Source.build(source, session.get(SourceState, source.name))

        return await run_in_threadpool(start)
