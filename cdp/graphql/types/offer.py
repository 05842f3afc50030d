from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from cdp.decisions.offers import OfferSpec, thaw


@strawberry.type(
    description="An offer (a nudge) a content provider supplies: saved through upsertOffer, "
    "from config, or from the provider's own source."
)
class Offer:
    id: str = strawberry.field(description='"<provider>:<key>": what decisions name it by.')
    provider: str = strawberry.field(description="The content provider that supplies it.")
    key: str
    name: str
    value: float
    cost: float
    priority: float
    levers: float = strawberry.field(description="Business lever arbitration multiplies in.")
    tags: list[str]
    valid_from: datetime | None
    valid_until: datetime | None
    budget: int | None = strawberry.field(description="Presentations in all; null: no limit.")
    propensity: str | None = strawberry.field(description="The score it is ranked by.")
    channels: list[str] = strawberry.field(
        description='The channels it has content for ("*": any channel).'
    )
    eligibility: JSON | None = strawberry.field(
        description="Who may get it: a condition, as in segments; null: everyone."
    )
    definition: JSON = strawberry.field(description="The definition, as saved or configured.")

    @classmethod
    def from_spec(cls, spec: OfferSpec) -> Offer:
        eligibility = spec.definition.get("eligibility")
        return cls(
            id=spec.id,
            provider=spec.provider,
            key=spec.key,
            name=spec.name,
            value=spec.value,
            cost=spec.cost,
            priority=spec.priority,
            levers=spec.levers,
            tags=list(spec.tags),
            valid_from=spec.valid_from,
            valid_until=spec.valid_until,
            budget=spec.budget,
            propensity=spec.propensity,
            channels=list(spec.channels),
            eligibility=None if eligibility is None else thaw(eligibility),
            definition=spec.definition_json(),
        )
