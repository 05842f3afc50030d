from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.segments.membership import Change


@strawberry.type(description="A profile entered or left a segment (sent once committed).")
class SegmentMembershipChange:
    segment_key: str
    profile_id: strawberry.ID
    entered: bool = strawberry.field(description="true: entered the segment; false: left it.")
    at: datetime

    @classmethod
    def from_change(cls, change: Change) -> SegmentMembershipChange:
        return cls(
            segment_key=change.segment_key,
            profile_id=strawberry.ID(change.profile_id),
            entered=change.entered,
            at=change.at,
        )
