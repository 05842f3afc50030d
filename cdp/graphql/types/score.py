from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.db.models import Score as ScoreRow


@strawberry.type(description="A model's score or label for a profile.")
class Score:
    name: str
    value: float | None
    label: str | None
    model_version: str | None
    scored_at: datetime

    @classmethod
    def from_row(cls, row: ScoreRow) -> Score:
        return cls(
            name=row.name,
            value=row.value,
            label=row.label,
            model_version=row.model_version,
            scored_at=row.scored_at,
        )
