from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from cdp.db.models import Segment as SegmentRow
from cdp.graphql.context import Info
from cdp.graphql.loaders import MemberPage
from cdp.graphql.types.connection import Connection, check_first, connection, decode_cursor
from cdp.graphql.types.profile import Profile


@strawberry.type(description="A named audience: the profiles that meet a condition.")
class Segment:
    key: str
    name: str
    description: str
    definition: JSON = strawberry.field(
        description="The condition tree, as saved (see the segments documentation)."
    )
    computed_at: datetime | None = strawberry.field(
        description="When membership was last recomputed for every profile."
    )
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="The number of current members.")
    async def size(self, info: Info) -> int:
        return await info.context.loaders.segment_sizes.load(self.key)

    @strawberry.field(description="The current members, in profile id (creation) order.")
    async def members(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> Connection[Profile]:
        check_first(first)
        page = MemberPage(first + 1, decode_cursor(after))
        rows = await info.context.loaders.members.load((self.key, page))
        return connection([Profile.from_row(r) for r in rows], [r.id for r in rows], first, after)

    @classmethod
    def from_row(cls, row: SegmentRow) -> Segment:
        return cls(
            key=row.key,
            name=row.name,
            description=row.description,
            definition=row.definition,
            computed_at=row.computed_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
