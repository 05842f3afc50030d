from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON

from cdp.db.models import Profile as ProfileRow
from cdp.decisions.pipeline import decider_for
from cdp.errors import UserError
from cdp.graphql.context import Info
from cdp.graphql.types.connection import Connection, check_first, connection, decode_cursor
from cdp.graphql.types.consent import Consent
from cdp.graphql.types.decision import Decision, DecisionContextInput
from cdp.graphql.types.event import Event
from cdp.graphql.types.identifier import Identifier
from cdp.graphql.types.merge import MergeRecord
from cdp.graphql.types.score import Score
from cdp.graphql.types.segment_membership import SegmentMembership
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
    computed: strawberry.Private[dict[str, Any]]

    @strawberry.field(
        description="Each computed trait's value; counts are 0 for a profile with no such events."
    )
    async def computed_traits(self, info: Info) -> JSON:
        counting = await info.context.loaders.counting_traits.load(None)
        values = {**dict.fromkeys(counting, 0), **self.computed}
        return dict(sorted(values.items()))

    @strawberry.field(description="The segments the profile is a member of now, by key.")
    async def segments(self, info: Info) -> list[SegmentMembership]:
        rows = await info.context.loaders.memberships.load(str(self.id))
        return [SegmentMembership.from_row(row) for row in rows]

    @strawberry.field(
        description="The best offers for this person in a context, ranked, rendered for the "
        "channel and explained; the decision is logged (its id is what responses refer to)."
    )
    async def next_best_offers(self, info: Info, context: DecisionContextInput) -> Decision:
        decider = decider_for(info.context.runtime)
        decided = await run_in_threadpool(decider.decide, str(self.id), context.to_context())
        return Decision.from_decided(decided)

    @strawberry.field(description="Model scores and labels, by name.")
    async def scores(self, info: Info) -> list[Score]:
        rows = await info.context.loaders.scores.load(str(self.id))
        return [Score.from_row(row) for row in rows]

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
            computed=row.computed_traits or {},
        )


def _event_key(key: str | None) -> tuple[datetime, int] | None:
    if key is None:
        return None
    at, _, event_id = key.rpartition("|")
    try:
        return datetime.fromisoformat(at), int(event_id)
    except ValueError:
        raise UserError("after: not a cursor returned by this API") from None
