"""Segments and computed traits: an admin saves, deletes and recomputes their definitions.

The service functions are synchronous (each its own transaction, holding the identity lock while
it recomputes), so they run in a worker thread; their `UserError`s name the faulty path
(`definition.and[1].op: …`) and reach the client as they are.
"""

from __future__ import annotations

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON

from cdp.db.models import Segment as SegmentRow
from cdp.errors import UserError
from cdp.graphql.context import Info
from cdp.graphql.permissions import ADMIN
from cdp.graphql.types.computed_trait import ComputedTrait
from cdp.graphql.types.segment import Segment
from cdp.segments import service
from cdp.segments.definitions import check_key
from cdp.segments.storable import check_storable

MAX_NAME = 255
MAX_DESCRIPTION = 10_000


@strawberry.type
class SegmentMutations:
    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Create or replace a segment and recompute its members (and those of the "
        "segments that refer to it). A name or description left out keeps the saved one.",
    )
    async def upsert_segment(
        self,
        info: Info,
        key: str,
        definition: JSON,
        name: str | None = None,
        description: str | None = None,
    ) -> Segment:
        _check_text("name", name, MAX_NAME)
        _check_text("description", description, MAX_DESCRIPTION)
        runtime = info.context.runtime

        def upsert() -> Segment:
            check_key(key, "segment")
            kept = description
            if kept is None:
                with runtime.sessions() as session:
                    saved = session.get(SegmentRow, key)
                    kept = saved.description if saved else ""
            service.upsert_segment(runtime, key, definition, name, kept)
            with runtime.sessions() as session:  # computed_at was set by the recompute
                return Segment.from_row(session.get_one(SegmentRow, key))

        return await run_in_threadpool(upsert)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Delete a segment and its memberships; refused while another segment "
        "refers to it.",
    )
    async def delete_segment(self, info: Info, key: str) -> bool:
        check_key(key, "segment")
        await run_in_threadpool(service.delete_segment, info.context.runtime, key)
        return True

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Create or replace a computed trait, recompute its values, then the "
        "segments that read it.",
    )
    async def upsert_computed_trait(self, info: Info, key: str, definition: JSON) -> ComputedTrait:
        runtime = info.context.runtime

        def upsert() -> ComputedTrait:
            return ComputedTrait.from_row(service.upsert_computed(runtime, key, definition))

        return await run_in_threadpool(upsert)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Delete a computed trait and its values; refused while a segment reads it.",
    )
    async def delete_computed_trait(self, info: Info, key: str) -> bool:
        check_key(key, "computed trait")
        await run_in_threadpool(service.delete_computed, info.context.runtime, key)
        return True

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Recompute every computed trait and these segments (and those that refer "
        "to them; all segments when keys is left out) for every profile; returns how many "
        "memberships changed.",
    )
    async def recompute_segments(self, info: Info, keys: list[str] | None = None) -> int:
        changes = await run_in_threadpool(service.recompute, info.context.runtime, keys)
        return len(changes)


def _check_text(argument: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise UserError(f"{argument}: at most {limit} characters (got {len(value)})")
    check_storable(value, argument)
