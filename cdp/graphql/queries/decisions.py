"""Reading decisions back, and choosing the outbound channel for an offer."""

from __future__ import annotations

import strawberry
from starlette.concurrency import run_in_threadpool

from cdp.db.models import Decision as DecisionRow
from cdp.decisions.channels import decide_channel
from cdp.decisions.pipeline import decider_for
from cdp.graphql.context import Info
from cdp.graphql.permissions import READ
from cdp.graphql.types.decision import ChannelChoice, Decision


@strawberry.type
class DecisionQueries:
    @strawberry.field(
        permission_classes=READ,
        description="A logged decision: its context, chosen offers with their factors, and the "
        "filtered offers with the rule that removed each.",
    )
    async def decision(self, info: Info, id: strawberry.ID) -> Decision | None:
        row = await info.context.read(lambda s: s.get(DecisionRow, str(id)))
        return Decision.from_row(row) if row else None

    @strawberry.field(
        permission_classes=READ,
        description="The channel to reach a profile with an offer: by consent, reachability, "
        "cost, the profile's past responsiveness per channel and the channels' budgets.",
    )
    async def decide_channel(
        self, info: Info, profile_id: strawberry.ID, offer_id: str
    ) -> ChannelChoice:
        decider = decider_for(info.context.runtime)
        choice = await run_in_threadpool(decide_channel, decider, str(profile_id), offer_id)
        return ChannelChoice(channel=choice.channel, options=choice.options)
