"""The Query root."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp import profiles
from cdp.db.models import SourceState
from cdp.errors import UserError
from cdp.graphql.context import Info
from cdp.graphql.permissions import ADMIN, READ
from cdp.graphql.types.connection import Connection, check_first, connection, decode_cursor
from cdp.graphql.types.identifier import IdentifierInput
from cdp.graphql.types.plugin import Plugin
from cdp.graphql.types.profile import Profile
from cdp.graphql.types.source import Source
from cdp.identity.rules import InvalidIdentifier
from cdp.sources.spec import load_sources


@strawberry.type
class Query:
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
