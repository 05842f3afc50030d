"""Reading profiles: by id (following merges to the survivor), by identifier, and in pages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.db.models import Identifier, Profile

MAX_MERGE_HOPS = 32


def get_profile(session: Session, profile_id: str) -> Profile | None:
    """The profile with this id, or the profile it was merged into."""
    profile = session.get(Profile, profile_id)
    hops = 0
    while profile is not None and profile.merged_into is not None and hops < MAX_MERGE_HOPS:
        profile = session.get(Profile, profile.merged_into)
        hops += 1
    return profile


def find_by_identifier(session: Session, type_: str, value: str) -> Profile | None:
    profile_id = session.scalar(
        select(Identifier.profile_id).where(Identifier.type == type_, Identifier.value == value)
    )
    return get_profile(session, profile_id) if profile_id else None


def page_profiles(session: Session, first: int, after_id: str | None) -> list[Profile]:
    """Up to `first` live (not merged-away) profiles after `after_id`, in id (= creation) order."""
    query = select(Profile).where(Profile.merged_into.is_(None)).order_by(Profile.id).limit(first)
    if after_id is not None:
        query = query.where(Profile.id > after_id)
    return list(session.scalars(query))


def identifiers_of(session: Session, profile_ids: Sequence[str]) -> dict[str, list[Identifier]]:
    found: dict[str, list[Identifier]] = defaultdict(list)
    rows = session.scalars(
        select(Identifier)
        .where(Identifier.profile_id.in_(profile_ids))
        .order_by(Identifier.profile_id, Identifier.type, Identifier.id)
    )
    for row in rows:
        found[row.profile_id].append(row)
    return found
