"""Offers: an admin saves and deletes the offers of a content provider.

The service functions are synchronous (each its own transaction), so they run in a worker
thread; their `UserError`s name the faulty path (`definition.content.email.subject: …`) and
reach the client as they are.
"""

from __future__ import annotations

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON

from cdp.decisions import catalogue
from cdp.graphql.context import Info
from cdp.graphql.permissions import ADMIN
from cdp.graphql.types.offer import Offer


@strawberry.type
class OfferMutations:
    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Create or replace (by its key) an offer of a content provider; the "
        "definition is validated, its templates compiled, and every fault named by its path.",
    )
    async def upsert_offer(
        self, info: Info, definition: JSON, provider: str = catalogue.DEFAULT_PROVIDER
    ) -> Offer:
        runtime = info.context.runtime
        spec = await run_in_threadpool(catalogue.upsert_offer, runtime, provider, definition)
        return Offer.from_spec(spec)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description='Delete a saved offer by id ("<provider>:<key>"); offers from config are '
        "changed there.",
    )
    async def delete_offer(self, info: Info, id: str) -> bool:
        await run_in_threadpool(catalogue.delete_offer, info.context.runtime, id)
        return True
