from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.graphql.types.model_output import ModelOutput
from cdp.graphql.types.model_version import ModelVersion
from cdp.models.catalog import Overview


@strawberry.type(description="A configured enrichment model, its versions and active version.")
class Model:
    name: str
    type: str = strawberry.field(description="The enricher (a plugin component).")
    task: str
    schedule: str | None
    outputs: list[ModelOutput]
    active_version: int | None
    versions: list[ModelVersion] = strawberry.field(description="Oldest first.")
    scored_at: datetime | None = strawberry.field(
        description="When every profile was last scored (by the batch)."
    )
    scored_version: int | None
    scored_profiles: int | None

    @classmethod
    def build(cls, item: Overview) -> Model:
        state = item.state
        active = state.active_version if state else None
        return cls(
            name=item.model.name,
            type=item.model.spec.type,
            task=item.model.enricher.task,
            schedule=item.model.spec.schedule,
            outputs=[ModelOutput.from_output(o) for o in item.model.outputs],
            active_version=active,
            versions=[ModelVersion.from_row(v, v.version == active) for v in item.versions],
            scored_at=state.scored_at if state else None,
            scored_version=state.scored_version if state else None,
            scored_profiles=state.scored_profiles if state else None,
        )
