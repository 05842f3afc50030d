"""A decision: the ranked, rendered offers for a profile in a context, and why."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from cdp.db.models import Decision as DecisionRow
from cdp.decisions.pipeline import Decided, DecisionContext


@strawberry.enum(description="What a person did with an offer.")
class Outcome(Enum):
    IMPRESSION = "IMPRESSION"
    CLICK = "CLICK"
    ACCEPT = "ACCEPT"
    CONVERSION = "CONVERSION"
    DISMISS = "DISMISS"
    REJECT = "REJECT"
    UNSUBSCRIBE = "UNSUBSCRIBE"


@strawberry.input(description="Where and how the offers will be shown.")
class DecisionContextInput:
    channel: str
    placement: str | None = None
    limit: int = 3
    attributes: JSON | None = None

    def to_context(self) -> DecisionContext:
        attributes = self.attributes if isinstance(self.attributes, dict) else {}
        return DecisionContext(self.channel, self.placement, self.limit, None, attributes)


@strawberry.type(description="An offer chosen by a decision, with the factors behind its rank.")
class RankedOffer:
    offer_id: str
    name: str | None
    rank: int
    score: float
    probability: float | None = strawberry.field(
        description="The probability the strategy chose it with (for off-policy evaluation)."
    )
    factors: JSON
    content: JSON | None = strawberry.field(
        description="The content rendered for the channel (only when the decision is made)."
    )


@strawberry.type(description="A candidate offer the decision did not give, and the rule why.")
class FilteredOffer:
    offer_id: str
    rule: str
    detail: str


@strawberry.type(description="A logged decision.")
class Decision:
    id: strawberry.ID
    profile_id: str
    channel: str
    placement: str | None
    strategy: str
    strategy_version: str
    holdout: bool = strawberry.field(description="The profile is in the control group.")
    offers: list[RankedOffer]
    filtered: list[FilteredOffer]
    created_at: datetime

    @classmethod
    def from_decided(cls, decided: Decided) -> Decision:
        return cls(
            id=strawberry.ID(decided.id),
            profile_id=decided.profile_id,
            channel=decided.channel,
            placement=decided.placement,
            strategy=decided.strategy,
            strategy_version=decided.strategy_version,
            holdout=decided.holdout,
            offers=[
                RankedOffer(
                    offer_id=c.offer.id,
                    name=c.offer.name,
                    rank=c.rank,
                    score=c.score,
                    probability=c.probability,
                    factors=dict(c.factors),
                    content=dict(c.content),
                )
                for c in decided.offers
            ],
            filtered=[
                FilteredOffer(offer_id=f["offer"], rule=f["rule"], detail=f["detail"])
                for f in decided.filtered
            ],
            created_at=decided.created_at,
        )

    @classmethod
    def from_row(cls, row: DecisionRow) -> Decision:
        items: list[dict[str, Any]] = list(row.offers)
        return cls(
            id=strawberry.ID(row.id),
            profile_id=row.profile_id,
            channel=row.channel,
            placement=row.placement,
            strategy=row.strategy,
            strategy_version=row.strategy_version,
            holdout=row.holdout,
            offers=[
                RankedOffer(
                    offer_id=i["offer"],
                    name=None,
                    rank=i["rank"],
                    score=i["score"],
                    probability=i.get("probability"),
                    factors=i.get("factors", {}),
                    content=None,
                )
                for i in items
            ],
            filtered=[
                FilteredOffer(offer_id=f["offer"], rule=f["rule"], detail=f["detail"])
                for f in row.filtered
            ],
            created_at=row.created_at,
        )


@strawberry.type(description="A recorded response.")
class RecordedResponse:
    id: strawberry.ID
    decision_id: str
    offer_id: str
    outcome: Outcome
    value: float | None
    created_at: datetime


@strawberry.type(description="The channel chosen to reach a profile with an offer.")
class ChannelChoice:
    channel: str | None = strawberry.field(description="None: no channel qualifies.")
    options: JSON = strawberry.field(
        description="Every configured channel with its cost, responsiveness, expected value "
        "and, where it was excluded, why."
    )
