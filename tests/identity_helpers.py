"""Building messages and reading profiles back, for the identity tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from cdp.collect.messages import Message, parse_message
from cdp.db.models import Identifier, Profile
from cdp.ingest.pipeline import Accepted, ingest_now
from cdp.runtime import Runtime

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


def msg(type_: str, at: datetime = T0, **fields: Any) -> Message:
    """A validated message; `at` is its timestamp (received now, so no skew correction)."""
    body = {"type": type_, "messageId": f"m{next(_ids)}", "timestamp": at.isoformat(), **fields}
    return parse_message(body, None, max(datetime.now(UTC), at + timedelta(seconds=1)), None)


def send(runtime: Runtime, *messages: Message, source: str = "web") -> list[Accepted]:
    return ingest_now(runtime, list(messages), source)


def live_profiles(runtime: Runtime) -> list[Profile]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Profile).where(Profile.merged_into.is_(None))))


def owner(runtime: Runtime, type_: str, value: str) -> str | None:
    with runtime.sessions() as session:
        return session.scalar(
            select(Identifier.profile_id).where(Identifier.type == type_, Identifier.value == value)
        )


def identifiers(runtime: Runtime, profile_id: str) -> set[tuple[str, str]]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Identifier.type, Identifier.value).where(Identifier.profile_id == profile_id)
        )
        return {(r.type, r.value) for r in rows}


def count(runtime: Runtime, model: type) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0
