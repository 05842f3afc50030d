from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.db.models import Identifier as IdentifierRow


@strawberry.type(description="A (type, value) pair that identifies a person, e.g. an e-mail.")
class Identifier:
    type: str
    value: str
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def from_row(cls, row: IdentifierRow) -> Identifier:
        return cls(
            type=row.type, value=row.value, first_seen=row.first_seen, last_seen=row.last_seen
        )


@strawberry.input(description="Look a profile up by one of its identifiers.")
class IdentifierInput:
    type: str
    value: str
