"""Configuring sources and reading back what an import stored, for the source tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conftest import make_config
from sqlalchemy import func, select

from cdp.config import ComponentEntry, Config
from cdp.db.models import Event, SourceReject, SourceState
from cdp.runtime import Runtime

CRM_MAPPING = {
    "identifiers": {"user_id": "Id", "email": "Email"},
    "traits": {"first_name": "First"},
    "consents": {"newsletter": "Newsletter"},
}


def entry(name: str = "crm", type_: str = "csv", **keys: Any) -> ComponentEntry:
    keys.setdefault("kind", "profiles")
    keys.setdefault("mapping", CRM_MAPPING)
    return ComponentEntry(name=name, type=type_, **keys)


def source_config(url: str, *entries: ComponentEntry) -> Config:
    return make_config(url, sources=list(entries))


@contextmanager
def started(url: str, *entries: ComponentEntry) -> Iterator[Runtime]:
    runtime = Runtime.start(source_config(url, *entries))
    try:
        yield runtime
    finally:
        runtime.close()


def events(runtime: Runtime, source: str = "crm") -> list[Event]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Event).where(Event.source == source).order_by(Event.id)))


def rejects(runtime: Runtime, source: str = "crm") -> list[SourceReject]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(SourceReject).where(SourceReject.source == source).order_by(SourceReject.id)
            )
        )


def state(runtime: Runtime, name: str = "crm") -> SourceState | None:
    with runtime.sessions() as session:
        return session.get(SourceState, name)


def duplicated_message_ids(runtime: Runtime, source: str = "crm") -> int:
    with runtime.sessions() as session:
        dupes = (
            select(Event.message_id)
            .where(Event.source == source)
            .group_by(Event.message_id)
            .having(func.count() > 1)
        )
        return session.scalar(select(func.count()).select_from(dupes.subquery())) or 0
