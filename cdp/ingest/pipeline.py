"""The one path every message takes: stored (idempotent by source and messageId), then applied
to profiles by identity resolution, in the caller's write transaction.

Collection API, GraphQL mutations, source connectors and the demo all come through here.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session

from cdp.collect.messages import Message
from cdp.db.bulk import insert_rows, next_ids
from cdp.db.models import Event, utcnow
from cdp.db.pairs import pairs_in
from cdp.decisions.responses import from_events
from cdp.identity.merge import lock_identity
from cdp.identity.resolver import MergeRecord, Outcome, Resolver, StoredEvent
from cdp.runtime import Runtime
from cdp.segments.engine import Evaluator
from cdp.segments.membership import Change

log = logging.getLogger(__name__)
BACKLOG_CHUNK = 1000
EVENTS = Event.__table__
EVENT_COLUMNS = [c.name for c in EVENTS.columns]


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: str
    event_id: int | None
    """None: a replay of a message already stored (nothing changed)."""
    profile_id: str | None


@dataclass
class Applied:
    """What a transaction did, for the lifecycle hooks to hear once it is committed."""

    events: list[tuple[StoredEvent, Outcome]] = field(default_factory=list)
    merges: list[MergeRecord] = field(default_factory=list)
    memberships: list[Change] = field(default_factory=list)

    def notify(self, runtime: Runtime) -> None:
        for record in self.merges:
            runtime.plugins.notify(
                "profiles_merged",
                survivor_id=record.survivor_id,
                merged_ids=record.merged_ids,
                reason=record.reason,
            )
        for event, outcome in self.events:
            if outcome.profile_id is not None:
                runtime.plugins.notify(
                    "event_ingested", event=dict(event.payload), profile_id=outcome.profile_id
                )
        notify_memberships(runtime, self.memberships)


def notify_memberships(runtime: Runtime, changes: Iterable[Change]) -> None:
    """Tell plugins and subscribers of committed membership changes."""
    for change in changes:
        runtime.plugins.notify(
            "segment_membership_changed",
            profile_id=change.profile_id,
            segment_key=change.segment_key,
            entered=change.entered,
        )
        runtime.bus.publish(f"segment:{change.segment_key}", change)


class Pipeline:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.rules = runtime.rules
        self.priority = runtime.config.traits.source_priority
        self.evaluator = Evaluator()

    def ingest(
        self, session: Session, messages: Sequence[Message], source: str, applied: Applied
    ) -> list[Accepted]:
        """Store and apply `messages` from `source` in `session` (a `Runtime.writing` one).

        Identities are resolved before the events are written, so each event is inserted once,
        already attached to its profile. If resolution fails, the events are still stored,
        unprocessed, and the backlog retries them one by one.
        """
        lock_identity(session)
        rows = [event_row(m, source) for m in messages]
        fresh = _fresh(session, rows)
        stored = [
            StoredEvent(r["id"], source, r["type"], r["timestamp"], r["payload"]) for r in fresh
        ]
        if stored:
            changed: set[str] | None = None
            try:
                with session.begin_nested():
                    outcomes, changed = self._resolve(session, stored, applied)
            except Exception:
                log.exception(
                    "identity resolution failed for %d events; left for the backlog", len(stored)
                )
            else:
                now = utcnow()
                for row, outcome in zip(fresh, outcomes, strict=True):
                    row.update(profile_id=outcome.profile_id, processed_at=now, error=outcome.error)
            _insert_events(session.connection(), fresh)
            from_events(session, fresh)  # track events that are responses to offers
            if changed is not None:
                self._refresh_segments(
                    session,
                    [(r["profile_id"], r["type"], r["name"]) for r in fresh],
                    changed,
                    applied,
                )
        fresh_ids = {id(row) for row in fresh}
        return [
            Accepted(r["message_id"], r["id"], r.get("profile_id"))
            if id(r) in fresh_ids
            else Accepted(r["message_id"], None, None)
            for r in rows
        ]

    def _resolve(
        self, session: Session, stored: Sequence[StoredEvent], applied: Applied
    ) -> tuple[list[Outcome], set[str]]:
        """Each event's outcome, and the profiles whose traits, identifiers or consents changed."""
        resolver = Resolver(session, self.rules, self.priority, utcnow())
        outcomes = resolver.run(stored)
        applied.events.extend(zip(stored, outcomes, strict=True))
        applied.merges.extend(resolver.merges)
        return outcomes, resolver.changed

    def _refresh_segments(
        self,
        session: Session,
        events: Iterable[tuple[str | None, str, str | None]],
        changed: set[str],
        applied: Applied,
    ) -> None:
        """Bring computed traits and memberships of the profiles just touched up to date; a
        failure is logged and left to the next bulk recompute, never losing the events."""
        kinds: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
        for profile_id, type_, name in events:
            if profile_id is not None:
                kinds[profile_id].add((type_, name))
        try:
            with session.begin_nested():
                applied.memberships.extend(
                    self.evaluator.refresh(session.connection(), utcnow(), changed, kinds)
                )
        except Exception:
            log.exception("segments could not be updated for %d profiles", len(kinds))

    def _apply_stored(
        self, session: Session, stored: Sequence[StoredEvent], applied: Applied
    ) -> None:
        """Resolve events already in the table (the backlog) and mark them processed."""
        outcomes, changed = self._resolve(session, stored, applied)
        _mark_processed(session, outcomes)
        key = {"track": "event", "page": "name", "screen": "name"}
        types = {e.id: (e.type, e.payload.get(key.get(e.type, ""))) for e in stored}
        self._refresh_segments(
            session, [(o.profile_id, *types[o.event_id]) for o in outcomes], changed, applied
        )

    def process_backlog(self, limit: int = BACKLOG_CHUNK) -> int:
        """Apply stored events that are not processed yet (left by a failure); returns how many.

        A chunk that fails is retried event by event, so one bad event is marked with its error
        and does not hold up the others.
        """
        # Most calls find nothing: look without the identity lock first, so an idle server does
        # not take the database-wide lock (or SQLite's write lock) every time it checks.
        with self.runtime.sessions() as session:
            if (
                session.scalar(select(Event.id).where(Event.processed_at.is_(None)).limit(1))
                is None
            ):
                return 0
        applied = Applied()
        with self.runtime.writing() as session:
            lock_identity(session)
            rows = session.execute(
                select(Event.id, Event.source, Event.type, Event.timestamp, Event.payload)
                .where(Event.processed_at.is_(None))
                .order_by(Event.id)
                .limit(limit)
            ).all()
            stored = [StoredEvent(r.id, r.source, r.type, r.timestamp, r.payload) for r in rows]
            if not stored:
                return 0
            try:
                with session.begin_nested():
                    self._apply_stored(session, stored, applied)
            except Exception:
                applied = Applied()
                for event in stored:
                    self._resolve_alone(session, event, applied)
        applied.notify(self.runtime)
        return len(stored)

    def _resolve_alone(self, session: Session, event: StoredEvent, applied: Applied) -> None:
        try:
            with session.begin_nested():
                self._apply_stored(session, [event], applied)
        except Exception as exc:
            log.exception("event %s cannot be applied to a profile", event.id)
            row = session.get(Event, event.id)
            assert row is not None
            row.processed_at, row.error = utcnow(), f"{type(exc).__name__}: {exc}"[:1000]


def store(session: Session, rows: Sequence[dict[str, Any]]) -> list[int | None]:
    """Insert event rows unprocessed (the backlog applies them); returns each one's new event
    id, or None for a replay. The caller holds the identity lock."""
    fresh = _fresh(session, rows)
    if fresh:
        _insert_events(session.connection(), fresh)
    return [row.get("id") for row in rows]


def _fresh(session: Session, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that are not replays, each given its event id (`row["id"]`).

    Under the identity lock no other writer stores meanwhile, so the check for replays and the
    ids taken here hold until the insert; the unique constraint on (source, message_id) backs
    this up.
    """
    conn = session.connection()
    keys = list({(r["source"], r["message_id"]) for r in rows})
    seen: set[tuple[str, str]] = set()
    for start in range(0, len(keys), 400):
        part = keys[start : start + 400]
        seen.update(
            conn.execute(
                select(EVENTS.c.source, EVENTS.c.message_id).where(
                    pairs_in(conn.dialect, EVENTS.c.source, EVENTS.c.message_id, part)
                )
            )
        )
    fresh: list[dict[str, Any]] = []
    for row in rows:  # the same messageId twice in one batch: the first one counts
        key = (row["source"], row["message_id"])
        if key not in seen:
            seen.add(key)
            fresh.append(row)
    for row, event_id in zip(fresh, next_ids(conn, EVENTS, len(fresh)), strict=True):
        row["id"] = event_id
    return fresh


def _insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    # The hottest statement (one row per event): straight to the driver, see cdp.db.bulk.
    insert_rows(conn, EVENTS, EVENT_COLUMNS, [[row.get(c) for c in EVENT_COLUMNS] for row in rows])


def _mark_processed(session: Session, outcomes: Sequence[Outcome]) -> None:
    if outcomes:
        now = utcnow()
        session.connection().execute(
            update(EVENTS)
            .where(EVENTS.c.id == bindparam("eid"))
            .values(
                profile_id=bindparam("pid"), processed_at=bindparam("now"), error=bindparam("err")
            ),
            [
                {"eid": o.event_id, "pid": o.profile_id, "now": now, "err": o.error}
                for o in outcomes
            ],
        )


def event_row(message: Message, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "message_id": message.message_id,
        "type": message.type,
        "name": message.event,
        "user_id": message.user_id,
        "anonymous_id": message.anonymous_id,
        "timestamp": message.timestamp,
        "original_timestamp": message.original_timestamp,
        "sent_at": message.sent_at,
        "received_at": message.received_at,
        # Self-contained: the type (single-message endpoints leave it out) and the context with
        # the batch's context folded in, as identity resolution reads them.
        "payload": {**message.raw, "type": message.type, "context": message.context},
    }


def ingest_now(runtime: Runtime, messages: Sequence[Message], source: str) -> list[Accepted]:
    """Store and apply messages in a transaction of their own (CLI, connectors, demo)."""
    pipeline = Pipeline(runtime)
    applied = Applied()
    with runtime.writing() as session:
        accepted = pipeline.ingest(session, messages, source, applied)
    applied.notify(runtime)
    return accepted
