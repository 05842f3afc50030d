from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.db.models import SegmentMembership as SegmentMembershipRow


@strawberry.type(description="A segment a profile is a member of now.")
class SegmentMembership:
    key: str = strawberry.field(description="The segment's key.")
    entered_at: datetime

    @classmethod
    def from_row(cls, row: SegmentMembershipRow) -> SegmentMembership:
        return cls(key=row.segment_key, entered_at=row.entered_at)
