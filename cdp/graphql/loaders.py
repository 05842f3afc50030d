"""One DataLoader per relation, created per request, so a list of N profiles costs one query per
relation instead of N."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session
from strawberry.dataloader import DataLoader

from cdp import profiles
from cdp.db.models import Consent, Event, Identifier, Merge
from cdp.profiles import EventPage

Reader = Callable[[Callable[[Session], Any]], Awaitable[Any]]


class Loaders:
    def __init__(self, read: Reader) -> None:
        self._read = read
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
