from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.db.models import Consent as ConsentRow


@strawberry.type(description="Consent for a purpose, on one channel or on all ('*').")
class Consent:
    purpose: str
    channel: str
    status: str = strawberry.field(description="granted, denied or revoked")
    source: str
    updated_at: datetime

    @classmethod
    def from_row(cls, row: ConsentRow) -> Consent:
        return cls(
            purpose=row.purpose,
            channel=row.channel,
            status=row.status,
            source=row.source,
            updated_at=row.updated_at,
        )
