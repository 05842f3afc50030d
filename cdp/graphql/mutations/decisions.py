"""Responses: front-ends and channels report what people did with the offers they were given."""

from __future__ import annotations

import strawberry
from starlette.concurrency import run_in_threadpool

from cdp.decisions.responses import record_response
from cdp.graphql.context import Info
from cdp.graphql.permissions import COLLECT
from cdp.graphql.types.decision import Outcome, RecordedResponse


@strawberry.type
class DecisionMutations:
    @strawberry.mutation(
        permission_classes=COLLECT,
        description="Record what a person did with an offer of a decision; it counts for caps, "
        "suppressions, prerequisites and learning strategies.",
    )
    async def record_response(
        self,
        info: Info,
        decision_id: str,
        offer_id: str,
        outcome: Outcome,
        value: float | None = None,
    ) -> RecordedResponse:
        runtime = info.context.runtime

        def record() -> RecordedResponse:
            with runtime.writing() as session:
                row = record_response(session, decision_id, offer_id, outcome.value, value)
                return RecordedResponse(
                    id=strawberry.ID(str(row.id)),
                    decision_id=row.decision_id,
                    offer_id=row.offer_id,
                    outcome=Outcome(row.outcome),
                    value=row.value,
                    created_at=row.created_at,
                )

        return await run_in_threadpool(record)
