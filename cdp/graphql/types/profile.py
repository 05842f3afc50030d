from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from cdp.db.models import Profile as ProfileRow
from cdp.errors import UserError
from cdp.graphql.context import Info
from cdp.graphql.types.connection import Connection, check_first, connection, decode_cursor
from cdp.graphql.types.consent import Consent
from cdp.graphql.types.event import Event
from cdp.graphql.types.identifier import Identifier
from cdp.graphql.types.merge import MergeRecord
from cdp.profiles import EventPage


@strawberry.type(description="One person, unified from every identifier seen for them.")
class Profile:
    id: strawberry.ID
    traits: JSON
    trait_sources: JSON = strawberry.field(
        description="Per trait: the source, event and time its current value came from."
    )
    created_at: datetime
    updated_at: datetime

    @strawberry.field
    async def identifiers(self, info: Info) -> list[Identifier]:
        rows = await info.context.loaders.identifiers.load(str(self.id))
        return [Identifier.from_row(row) for row in rows]

    @strawberry.field
    async def consents(self, info: Info) -> list[Consent]:
        rows = await info.context.loaders.consents.load(str(self.id))
        return [Consent.from_row(row) for row in rows]

    @strawberry.field(description="The merges and splits that made this profile, oldest first.")
    async def merge_history(self, info: Info) -> list[MergeRecord]:
        rows = await info.context.loaders.merge_history.load(str(self.id))
        return [MergeRecord.from_row(row) for row in rows]

    @strawberry.field(description="The timeline, newest first.")
    async def events(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        type: str | None = None,
        name: str | None = None,
    ) -> Connection[Event]:
        check_first(first)
        page = EventPage(first + 1, _event_key(decode_cursor(after)), type, name)
        rows = await info.context.loaders.events.load((str(self.id), page))
        keys = [f"{r.timestamp.isoformat()}|{r.id}" for r in rows]
        return connection([Event.from_row(r) for r in rows], keys, first, after)

    @classmethod
    def from_row(cls, row: ProfileRow) -> Profile:
        return cls(
            id=strawberry.ID(row.id),
            traits=row.traits,
            trait_sources=row.trait_sources,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _event_key(key: str | None) -> tuple[datetime, int] | None:
    if key is None:
        return None
    at, _, event_id = key.rpartition("|")
    try:
        return datetime.fromisoformat(at), int(event_id)
    except ValueError:
        raise UserError("after: not a cursor returned by this API") from None
