"""The Subscription root: what this process commits, pushed over WebSocket
(graphql-transport-ws or the older graphql-ws)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from cdp.db.models import Segment as SegmentRow
from cdp.errors import NotFoundError
from cdp.graphql.context import Info
from cdp.graphql.permissions import READ
from cdp.graphql.types.membership_change import SegmentMembershipChange
from cdp.segments.definitions import KEY


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=READ,
        description="Profiles entering and leaving the segment, as each change is committed by "
        "this server process (ingestion, recomputes).",
    )
    async def segment_membership_changed(
        self, info: Info, segment: str
    ) -> AsyncGenerator[SegmentMembershipChange, None]:
        known = KEY.match(segment) is not None and await info.context.read(
            lambda s: s.get(SegmentRow, segment) is not None
        )
        if not known:
            raise NotFoundError(f"segment: no segment has the key {segment!r}")
        async for change in info.context.runtime.bus.subscribe(f"segment:{segment}"):
            yield SegmentMembershipChange.from_change(change)
