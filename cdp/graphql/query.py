"""The Query root."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON

from cdp import profiles
from cdp.db.models import ComputedTrait as ComputedTraitRow
from cdp.db.models import Profile as ProfileRow
from cdp.db.models import Segment as SegmentRow
from cdp.db.models import SourceState, utcnow
from cdp.decisions.catalogue import offer_cache
from cdp.errors import UserError
from cdp.graphql.context import Info
from cdp.graphql.permissions import ADMIN, READ
from cdp.graphql.queries.decisions import DecisionQueries
from cdp.graphql.queries.models import ModelQueries
from cdp.graphql.types.computed_trait import ComputedTrait
from cdp.graphql.types.connection import Connection, check_first, connection, decode_cursor
from cdp.graphql.types.identifier import IdentifierInput
from cdp.graphql.types.offer import Offer
from cdp.graphql.types.plugin import Plugin
from cdp.graphql.types.profile import Profile
from cdp.graphql.types.segment import Segment
from cdp.graphql.types.segment_preview import SegmentPreview
from cdp.graphql.types.source import Source
from cdp.identity.rules import InvalidIdentifier
from cdp.segments import service
from cdp.segments.definitions import KEY
from cdp.sources.spec import load_sources


@strawberry.type
class Query(DecisionQueries, ModelQueries):
    @strawberry.field(
        permission_classes=READ,
        description="A profile by id (a merged-away id gives the survivor) or by identifier.",
    )
    async def profile(
        self, info: Info, id: strawberry.ID | None = None, identifier: IdentifierInput | None = None
    ) -> Profile | None:
        if (id is None) == (identifier is None):
            raise UserError("profile: give exactly one of id and identifier")
        if id is not None:
            row = await info.context.read(lambda s: profiles.get_profile(s, str(id)))
        else:
            assert identifier is not None
            rules = info.context.runtime.rules
            if identifier.type not in rules.types:
                known = ", ".join(rules.types)
                raise UserError(f"identifier.type: unknown type {identifier.type!r} ({known})")
            try:
                value = rules.normalise(identifier.type, identifier.value)
            except InvalidIdentifier as exc:
                raise UserError(f"identifier.value: {exc.reason}") from None
            row = await info.context.read(
                lambda s: profiles.find_by_identifier(s, identifier.type, value)
            )
        return Profile.from_row(row) if row else None

    @strawberry.field(permission_classes=READ, description="Live profiles, oldest first.")
    async def profiles(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> Connection[Profile]:
        check_first(first)
        after_id = decode_cursor(after)
        rows = await info.context.read(lambda s: profiles.page_profiles(s, first + 1, after_id))
        return connection([Profile.from_row(r) for r in rows], [r.id for r in rows], first, after)

    @strawberry.field(
        permission_classes=ADMIN, description="Configured source connectors and their imports."
    )
    async def sources(self, info: Info) -> list[Source]:
        runtime = info.context.runtime
        configured = load_sources(runtime.config, runtime.plugins)

        def states(session: Session) -> dict[str, SourceState]:
            return {s.name: s for s in session.scalars(select(SourceState))}

        found = await info.context.read(states)
        return [Source.build(source, found.get(source.name)) for source in configured]

    @strawberry.field(
        permission_classes=ADMIN, description="Installed plugins and what they supply."
    )
    def plugins(self, info: Info) -> list[Plugin]:
        host = info.context.runtime.plugins
        return [Plugin.from_info(p) for p in sorted(host.plugins.values(), key=lambda p: p.name)]

    @strawberry.field(permission_classes=READ, description="Every segment, by key.")
    async def segments(self, info: Info) -> list[Segment]:
        rows = await info.context.read(
            lambda s: list(s.scalars(select(SegmentRow).order_by(SegmentRow.key)))
        )
        return [Segment.from_row(row) for row in rows]

    @strawberry.field(permission_classes=READ, description="A segment by key.")
    async def segment(self, info: Info, key: str) -> Segment | None:
        if not KEY.match(key):  # no segment can have it
            return None
        row = await info.context.read(lambda s: s.get(SegmentRow, key))
        return Segment.from_row(row) if row else None

    @strawberry.field(
        permission_classes=READ,
        description="The size and a sample of the profiles a segment definition selects now, "
        "without saving anything.",
    )
    async def preview_segment(
        self, info: Info, definition: JSON, sample: int = 10
    ) -> SegmentPreview:
        runtime = info.context.runtime

        def run() -> SegmentPreview:
            found = service.preview(runtime, definition, sample)
            with runtime.sessions() as session:
                rows = session.scalars(select(ProfileRow).where(ProfileRow.id.in_(found.sample)))
                by_id = {row.id: Profile.from_row(row) for row in rows}
            return SegmentPreview(
                size=found.size, sample=[by_id[i] for i in found.sample if i in by_id]
            )

        return await run_in_threadpool(run)

    @strawberry.field(
        permission_classes=READ,
        description="Every valid offer of every content provider (saved, configured or from "
        "the provider's own source), in provider order; invalid ones are left out and logged.",
    )
    async def offers(self, info: Info) -> list[Offer]:
        runtime = info.context.runtime
        cache = offer_cache(runtime)
        found = await info.context.read(lambda s: cache.offers(s, runtime, utcnow()))
        return [Offer.from_spec(spec) for spec in found]

    @strawberry.field(permission_classes=READ, description="Every computed trait, by key.")
    async def computed_traits(self, info: Info) -> list[ComputedTrait]:
        rows = await info.context.read(
            lambda s: list(s.scalars(select(ComputedTraitRow).order_by(ComputedTraitRow.key)))
        )
        return [ComputedTrait.from_row(row) for row in rows]
