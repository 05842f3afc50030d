"""`track` and `identify`: the collection pipeline, for clients that speak GraphQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from cdp.collect.messages import parse_message
from cdp.graphql.context import Info
from cdp.graphql.permissions import COLLECT


@strawberry.input
class TrackInput:
    event: str
    user_id: str | None = None
    anonymous_id: str | None = None
    properties: JSON | None = None
    context: JSON | None = None
    timestamp: datetime | None = None
    message_id: str | None = strawberry.field(
        default=None, description="Idempotency key; a replay changes nothing."
    )


@strawberry.input
class IdentifyInput:
    user_id: str | None = None
    anonymous_id: str | None = None
    traits: JSON | None = None
    context: JSON | None = None
    timestamp: datetime | None = None
    message_id: str | None = None


@strawberry.type
class IngestResult:
    message_id: str
    duplicate: bool = strawberry.field(description="The messageId was already stored.")
    profile_id: strawberry.ID | None = strawberry.field(
        description="The profile the event was applied to (null for a duplicate)."
    )


def _message(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in fields.items():
        if value is None:
            continue
        camel = key.split("_")[0] + "".join(p.title() for p in key.split("_")[1:])
        out[camel] = value.isoformat() if isinstance(value, datetime) else value
    return out


async def _ingest(info: Info, type_: str, fields: dict[str, Any]) -> IngestResult:
    message = parse_message(_message(fields), type_, datetime.now(UTC), None)
    principal = info.context.principal
    assert principal is not None  # the permission class let it through
    [accepted] = await info.context.writer.submit([message], principal.name)
    return IngestResult(
        message_id=accepted.message_id,
        duplicate=accepted.event_id is None,
        profile_id=strawberry.ID(accepted.profile_id) if accepted.profile_id else None,
    )


@strawberry.type
class IngestMutations:
    @strawberry.mutation(permission_classes=COLLECT, description="Record what a person did.")
    async def track(self, info: Info, input: TrackInput) -> IngestResult:
        return await _ingest(info, "track", vars(input))

    @strawberry.mutation(permission_classes=COLLECT, description="Record who a person is.")
    async def identify(self, info: Info, input: IdentifyInput) -> IngestResult:
        return await _ingest(info, "identify", vars(input))
