"""Reading the enrichment models: their outputs, versions with metrics, the active version."""

from __future__ import annotations

import strawberry
from starlette.concurrency import run_in_threadpool

from cdp.graphql.context import Info
from cdp.graphql.permissions import READ
from cdp.graphql.types.model import Model
from cdp.models import catalog


@strawberry.type
class ModelQueries:
    @strawberry.field(
        permission_classes=READ,
        description="The configured enrichment models, with their versions and active version.",
    )
    async def models(self, info: Info) -> list[Model]:
        runtime = info.context.runtime
        found = await run_in_threadpool(catalog.overview, runtime)
        return [Model.build(item) for item in found]

    @strawberry.field(permission_classes=READ, description="A configured model by name.")
    async def model(self, info: Info, name: str) -> Model | None:
        runtime = info.context.runtime
        if not any(m.name == name for m in catalog.configured(runtime)):
            return None
        [item] = await run_in_threadpool(catalog.overview, runtime, [name])
        return Model.build(item)
