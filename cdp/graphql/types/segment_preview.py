from __future__ import annotations

import strawberry

from cdp.graphql.types.profile import Profile


@strawberry.type(description="What a segment definition would select now; nothing is saved.")
class SegmentPreview:
    size: int = strawberry.field(description="How many live profiles meet the definition.")
    sample: list[Profile] = strawberry.field(description="Some of them, oldest profiles first.")
