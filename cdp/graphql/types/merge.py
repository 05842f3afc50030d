from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.db.models import Merge as MergeRow


@strawberry.type(description="How a profile came to be: a merge into it, or a split out of it.")
class MergeRecord:
    kind: str = strawberry.field(
        description="merge: mergedId became part of survivorId; "
        "split: mergedId was split out of survivorId"
    )
    survivor_id: strawberry.ID
    merged_id: strawberry.ID
    reason: str
    actor: str
    event_id: strawberry.ID | None
    at: datetime

    @classmethod
    def from_row(cls, row: MergeRow) -> MergeRecord:
        return cls(
            kind=row.kind,
            survivor_id=strawberry.ID(row.survivor_id),
            merged_id=strawberry.ID(row.merged_id),
            reason=row.reason,
            actor=row.actor,
            event_id=strawberry.ID(str(row.event_id)) if row.event_id is not None else None,
            at=row.created_at,
        )
