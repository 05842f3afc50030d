from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from cdp.db.models import Profile as ProfileRow
from cdp.graphql.context import Info
from cdp.graphql.types.identifier import Identifier


@strawberry.type(description="One person, unified from every identifier seen for them.")
class Profile:
    id: strawberry.ID
    traits: JSON
    created_at: datetime
    updated_at: datetime

    @strawberry.field
    async def identifiers(self, info: Info) -> list[Identifier]:
        rows = await info.context.loaders.identifiers.load(str(self.id))
        return [Identifier.from_row(row) for row in rows]

    @classmethod
    def from_row(cls, row: ProfileRow) -> Profile:
        return cls(
            id=strawberry.ID(row.id),
            traits=row.traits,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
