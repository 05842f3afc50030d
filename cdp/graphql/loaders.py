"""One DataLoader per relation, created per request, so a list of N profiles costs one query per
relation instead of N."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session
from strawberry.dataloader import DataLoader

from cdp.db.models import Identifier
from cdp.profiles import identifiers_of

T = TypeVar("T")
Reader = Callable[[Callable[[Session], Any]], Awaitable[Any]]


class Loaders:
    def __init__(self, read: Reader) -> None:
        self._read = read
        self.identifiers: DataLoader[str, list[Identifier]] = DataLoader(self._identifiers)

    async def _identifiers(self, profile_ids: Sequence[str]) -> list[list[Identifier]]:
        found = await self._read(lambda s: identifiers_of(s, profile_ids))
        return [found.get(pid, []) for pid in profile_ids]
