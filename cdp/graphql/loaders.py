"""One DataLoader per relation, created per request, so a list of N profiles costs one query per
relation instead of N."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session
from strawberry.dataloader import DataLoader

from cdp import profiles
from cdp.db.models import (
    ComputedTrait,
    Consent,
    Event,
    Identifier,
    Merge,
    Profile,
    Score,
    SegmentMembership,
)
from cdp.profiles import EventPage
from cdp.segments.compiler import COUNTING

Reader = Callable[[Callable[[Session], Any]], Awaitable[Any]]
Refresher = Callable[[Sequence[str]], Awaitable[None]]


class Loaders:
    def __init__(self, read: Reader, refresh_scores: Refresher | None = None) -> None:
        self._read = read
        self._refresh_scores = refresh_scores
        """Scores stale or missing profiles on demand before their scores are read."""
        self.identifiers: DataLoader[str, list[Identifier]] = DataLoader(
            self._by_profile(profiles.identifiers_of)
        )
        self.consents: DataLoader[str, list[Consent]] = DataLoader(
            self._by_profile(profiles.consents_of)
        )
        self.merge_history: DataLoader[str, list[Merge]] = DataLoader(
            self._by_profile(profiles.merge_history_of)
        )
        self.events: DataLoader[tuple[str, EventPage], list[Event]] = DataLoader(self._events)
        self.memberships: DataLoader[str, list[SegmentMembership]] = DataLoader(
            self._by_profile(memberships_of)
        )
        self.scores: DataLoader[str, list[Score]] = DataLoader(self._scores)
        self.segment_sizes: DataLoader[str, int] = DataLoader(self._segment_sizes)
        self.members: DataLoader[tuple[str, MemberPage], list[Profile]] = DataLoader(self._members)
        self.counting_traits: DataLoader[None, frozenset[str]] = DataLoader(self._counting_traits)
        """One key (None): the computed traits that read as 0 where a profile has no value."""

    def _by_profile(
        self, fetch: Callable[[Session, Sequence[str]], dict[str, list[Any]]]
    ) -> Callable[[Sequence[str]], Awaitable[list[list[Any]]]]:
        async def load(profile_ids: Sequence[str]) -> list[list[Any]]:
            found = await self._read(lambda s: fetch(s, profile_ids))
            return [found.get(pid, []) for pid in profile_ids]

        return load

    async def _events(self, keys: Sequence[tuple[str, EventPage]]) -> list[list[Event]]:
        # Profiles asking for the same page shape share one query.
        by_page: dict[EventPage, list[str]] = defaultdict(list)
        for profile_id, page in keys:
            by_page[page].append(profile_id)
        found: dict[tuple[str, EventPage], list[Event]] = {}
        for page, profile_ids in by_page.items():
            rows = await self._read(
                lambda s, p=page, ids=profile_ids: profiles.events_of(s, ids, p)
            )
            for profile_id in profile_ids:
                found[(profile_id, page)] = rows.get(profile_id, [])
        return [found[key] for key in keys]

    async def _scores(self, profile_ids: Sequence[str]) -> list[list[Score]]:
        if self._refresh_scores is not None:
            await self._refresh_scores(profile_ids)
        return await self._by_profile(scores_of)(profile_ids)

    async def _segment_sizes(self, keys: Sequence[str]) -> list[int]:
        found = await self._read(lambda s: segment_sizes(s, keys))
        return [found.get(key, 0) for key in keys]

    async def _members(self, keys: Sequence[tuple[str, MemberPage]]) -> list[list[Profile]]:
        by_page: dict[MemberPage, list[str]] = defaultdict(list)
        for segment_key, page in keys:
            by_page[page].append(segment_key)
        found: dict[tuple[str, MemberPage], list[Profile]] = {}
        for page, segment_keys in by_page.items():
            rows = await self._read(lambda s, p=page, ks=segment_keys: members_of(s, ks, p))
            for segment_key in segment_keys:
                found[(segment_key, page)] = rows.get(segment_key, [])
        return [found[key] for key in keys]

    async def _counting_traits(self, keys: Sequence[None]) -> list[frozenset[str]]:
        found = await self._read(counting_traits)
        return [found for _ in keys]


# --- the queries the loaders batch ---------------------------------------------------------------

_CURRENT = SegmentMembership.left_at.is_(None)


def memberships_of(
    session: Session, profile_ids: Sequence[str]
) -> dict[str, list[SegmentMembership]]:
    """Each profile's current memberships, by segment key."""
    found: dict[str, list[SegmentMembership]] = defaultdict(list)
    for row in session.scalars(
        select(SegmentMembership)
        .where(SegmentMembership.profile_id.in_(profile_ids), _CURRENT)
        .order_by(SegmentMembership.profile_id, SegmentMembership.segment_key)
    ):
        found[row.profile_id].append(row)
    return found


def scores_of(session: Session, profile_ids: Sequence[str]) -> dict[str, list[Score]]:
    found: dict[str, list[Score]] = defaultdict(list)
    for row in session.scalars(
        select(Score)
        .where(Score.profile_id.in_(profile_ids))
        .order_by(Score.profile_id, Score.name)
    ):
        found[row.profile_id].append(row)
    return found


def segment_sizes(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """The number of current (live) members of each segment."""
    rows = session.execute(
        select(SegmentMembership.segment_key, func.count())
        .join(Profile, Profile.id == SegmentMembership.profile_id)
        .where(SegmentMembership.segment_key.in_(keys), _CURRENT, Profile.merged_into.is_(None))
        .group_by(SegmentMembership.segment_key)
    )
    return {key: count for key, count in rows}


@dataclass(frozen=True)
class MemberPage:
    """Which members of a segment: `first` of them, after the profile id `after`, in id order."""

    first: int
    after: str | None = None


def members_of(
    session: Session, segment_keys: Sequence[str], page: MemberPage
) -> dict[str, list[Profile]]:
    """One statement for many segments: each one's page of current members, a UNION ALL of one
    LIMIT query per segment, so each part walks the membership key in order and stops early."""
    m = SegmentMembership
    parts = []
    for segment_key in dict.fromkeys(segment_keys):
        query = (
            select(m.segment_key, m.profile_id)
            .join(Profile, Profile.id == m.profile_id)
            .where(m.segment_key == segment_key, _CURRENT, Profile.merged_into.is_(None))
            .order_by(m.profile_id)
            .limit(page.first)
        )
        if page.after is not None:
            query = query.where(m.profile_id > page.after)
        part = query.subquery()
        parts.append(select(part.c.segment_key, part.c.profile_id))
    pages = union_all(*parts).subquery("pages")
    rows = session.execute(
        select(pages.c.segment_key, Profile)
        .join(pages, pages.c.profile_id == Profile.id)
        .order_by(pages.c.segment_key, Profile.id)
    )
    found: dict[str, list[Profile]] = defaultdict(list)
    for segment_key, profile in rows:
        found[segment_key].append(profile)
    return found


def counting_traits(session: Session) -> frozenset[str]:
    """The keys of the computed traits whose value is 0, not missing, for a profile without
    events (stored definitions are validated, so `aggregate` is there)."""
    rows = session.execute(select(ComputedTrait.key, ComputedTrait.definition))
    return frozenset(key for key, definition in rows if definition.get("aggregate") in COUNTING)
