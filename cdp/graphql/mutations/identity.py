"""`mergeProfiles` and `splitProfile`: an admin's corrections to identity resolution."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.db.models import Identifier, IdentityEdge
from cdp.errors import NotFoundError, UserError
from cdp.graphql.context import Info
from cdp.graphql.permissions import ADMIN
from cdp.graphql.types.identifier import IdentifierInput
from cdp.graphql.types.profile import Profile
from cdp.identity.merge import lock_identity, merge_profiles
from cdp.identity.rules import Rules
from cdp.identity.split import split_profile
from cdp.profiles import get_profile


@strawberry.type
class IdentityMutations:
    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Merge profiles known to be one person; recorded as a manual link.",
    )
    async def merge_profiles(
        self, info: Info, survivor_id: strawberry.ID, merged_ids: list[strawberry.ID], reason: str
    ) -> Profile:
        runtime = info.context.runtime
        actor = f"key:{info.context.principal.name}" if info.context.principal else "admin"
        rules = runtime.rules

        def merge(session: Session) -> tuple[Profile, list[str]]:
            lock_identity(session)
            survivor = get_profile(session, str(survivor_id))
            if survivor is None:
                raise NotFoundError(f"survivorId: no profile {survivor_id!r}")
            others = []
            for merged_id in merged_ids:
                other = get_profile(session, str(merged_id))
                if other is None:
                    raise NotFoundError(f"mergedIds: no profile {merged_id!r}")
                if other.id == survivor.id:
                    raise UserError(f"mergedIds: {merged_id!r} is already part of {survivor.id!r}")
                others.append(other.id)
            if not others:
                raise UserError("mergedIds: name at least one profile to merge")
            anchor = _strongest(session, rules, survivor.id)
            for other in others:
                linked = _strongest(session, rules, other)
                if anchor is not None and linked is not None:
                    session.add(IdentityEdge(a_id=anchor, b_id=linked, source="manual", rule=actor))
            row = merge_profiles(
                session,
                survivor.id,
                others,
                reason=reason,
                actor=actor,
                priority=runtime.config.traits.source_priority,
            )
            return Profile.from_row(row), others

        profile, others = await info.context.write(merge)
        runtime.plugins.notify(
            "profiles_merged", survivor_id=str(profile.id), merged_ids=others, reason=reason
        )
        return profile

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Undo links: remove the identity-graph edges of these identifiers; the "
        "profile splits into its connected parts, each with its own events and traits.",
    )
    async def split_profile(
        self,
        info: Info,
        profile_id: strawberry.ID,
        identifiers: list[IdentifierInput],
        reason: str,
    ) -> list[Profile]:
        runtime = info.context.runtime
        actor = f"key:{info.context.principal.name}" if info.context.principal else "admin"
        rules = runtime.rules

        def split(session: Session) -> list[Profile]:
            ids = split_profile(
                session,
                rules,
                runtime.config.traits.source_priority,
                str(profile_id),
                [(i.type, i.value) for i in identifiers],
                actor=actor,
                reason=reason,
            )
            session.flush()
            return [Profile.from_row(get_profile(session, pid)) for pid in ids]  # type: ignore[arg-type]

        return await info.context.write(split)


def _strongest(session: Session, rules: Rules, profile_id: str) -> int | None:
    rows = session.execute(
        select(Identifier.id, Identifier.type).where(Identifier.profile_id == profile_id)
    ).all()
    known = [r for r in rows if r.type in rules.types]
    return min(known, key=lambda r: (rules.priority(r.type), r.id)).id if known else None
