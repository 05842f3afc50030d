from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from cdp.db.models import Event as EventRow


@strawberry.type(description="A collected message on a profile's timeline.")
class Event:
    id: strawberry.ID
    type: str
    name: str | None = strawberry.field(description="track: the event; page/screen: the name.")
    message_id: str
    source: str
    timestamp: datetime
    received_at: datetime
    properties: JSON
    traits: JSON
    context: JSON

    @classmethod
    def from_row(cls, row: EventRow) -> Event:
        payload: dict[str, Any] = row.payload
        return cls(
            id=strawberry.ID(str(row.id)),
            type=row.type,
            name=row.name,
            message_id=row.message_id,
            source=row.source,
            timestamp=row.timestamp,
            received_at=row.received_at,
            properties=_object(payload.get("properties")),
            traits=_object(payload.get("traits")),
            context=_object(payload.get("context")),
        )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
