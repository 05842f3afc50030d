from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from cdp.db.models import ComputedTrait as ComputedTraitRow


@strawberry.type(
    description="An aggregate over each profile's events, kept on `Profile.computedTraits`."
)
class ComputedTrait:
    key: str
    definition: JSON = strawberry.field(description="The definition, as saved.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: ComputedTraitRow) -> ComputedTrait:
        return cls(
            key=row.key,
            definition=row.definition,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
