"""Reading profiles and what hangs off them: by id (following merges to the survivor), by
identifier, in pages; identifiers, consents, merge history and event timelines for many at once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from cdp.db.models import Consent, Event, Identifier, Merge, Profile

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


def consents_of(session: Session, profile_ids: Sequence[str]) -> dict[str, list[Consent]]:
    found: dict[str, list[Consent]] = defaultdict(list)
    for row in session.scalars(
        select(Consent)
        .where(Consent.profile_id.in_(profile_ids))
        .order_by(Consent.purpose, Consent.channel)
    ):
        found[row.profile_id].append(row)
    return found


def merge_history_of(session: Session, profile_ids: Sequence[str]) -> dict[str, list[Merge]]:
    """Merges into and splits out of each profile, including those of profiles merged into it."""
    owner = {pid: pid for pid in profile_ids}
    for old_id, survivor in session.execute(
        select(Profile.id, Profile.merged_into).where(Profile.merged_into.in_(profile_ids))
    ):
        owner[old_id] = survivor
    found: dict[str, list[Merge]] = defaultdict(list)
    for row in session.scalars(
        select(Merge).where(Merge.survivor_id.in_(owner)).order_by(Merge.created_at, Merge.id)
    ):
        found[owner[row.survivor_id]].append(row)
    return found


@dataclass(frozen=True)
class EventPage:
    """Which events of a profile: newest first, `first` of them, before the (timestamp, id) key."""

    first: int
    before: tuple[datetime, int] | None = None
    type: str | None = None
    name: str | None = None


def events_of(
    session: Session, profile_ids: Sequence[str], page: EventPage
) -> dict[str, list[Event]]:
    """One query for many profiles: each one's page, numbered per profile in SQL."""
    conditions = [Event.profile_id.in_(profile_ids)]
    if page.type is not None:
        conditions.append(Event.type == page.type)
    if page.name is not None:
        conditions.append(Event.name == page.name)
    if page.before is not None:
        at, event_id = page.before
        conditions.append(
            or_(Event.timestamp < at, and_(Event.timestamp == at, Event.id < event_id))
        )
    rank = (
        func.row_number()
        .over(partition_by=Event.profile_id, order_by=(Event.timestamp.desc(), Event.id.desc()))
        .label("rank")
    )
    numbered = select(Event.id, rank).where(*conditions).subquery()
    rows = session.scalars(
        select(Event)
        .join(numbered, numbered.c.id == Event.id)
        .where(numbered.c.rank <= page.first)
        .order_by(Event.profile_id, Event.timestamp.desc(), Event.id.desc())
    )
    found: dict[str, list[Event]] = defaultdict(list)
    for row in rows:
        found[row.profile_id].append(row)
    return found
