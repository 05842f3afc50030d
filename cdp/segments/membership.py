"""Writing membership changes: the membership rows, and a `Segment Entered` / `Segment Exited`
event on the profile's timeline for each. The caller holds the identity lock (event ids)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db.bulk import insert_rows, next_ids
from cdp.db.models import Event, SegmentMembership

EVENTS = Event.__table__
MEMBERSHIPS = SegmentMembership.__table__
SOURCE = "cdp:segments"
ENTERED, EXITED = "Segment Entered", "Segment Exited"
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Change:
    segment_key: str
    profile_id: str
    entered: bool
    at: datetime


def apply_changes(
    conn: Connection, key: str, rows: Sequence[tuple[str, int]], now: datetime
) -> list[Change]:
    """`rows` are (profile id, member now: 1 or 0) of the profiles whose membership changes."""
    changes = [Change(key, profile_id, bool(member), now) for profile_id, member in rows]
    for start in range(0, len(changes), CHUNK):
        part = changes[start : start + CHUNK]
        entered = [c.profile_id for c in part if c.entered]
        left = [c.profile_id for c in part if not c.entered]
        if entered:
            insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
            statement = insert(MEMBERSHIPS)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["segment_key", "profile_id"],
                    set_={"entered_at": statement.excluded.entered_at, "left_at": None},
                ),
                [
                    {"segment_key": key, "profile_id": p, "entered_at": now, "left_at": None}
                    for p in entered
                ],
            )
        if left:
            conn.execute(
                update(MEMBERSHIPS)
                .where(
                    MEMBERSHIPS.c.segment_key == key,
                    MEMBERSHIPS.c.profile_id == bindparam("pid"),
                    MEMBERSHIPS.c.left_at.is_(None),
                )
                .values(left_at=now),
                [{"pid": p} for p in left],
            )
        _timeline(conn, part)
    return changes


def _timeline(conn: Connection, changes: Sequence[Change]) -> None:
    columns = (
        "id", "source", "message_id", "type", "name", "profile_id", "timestamp", "received_at",
        "processed_at", "payload",
    )  # fmt: skip
    rows = []
    for change, event_id in zip(changes, next_ids(conn, EVENTS, len(changes)), strict=True):
        name = ENTERED if change.entered else EXITED
        verb = "entered" if change.entered else "exited"
        at = change.at
        message_id = f"{change.segment_key}/{change.profile_id}/{verb}/{at.isoformat()}"
        payload = {
            "type": "track",
            "event": name,
            "messageId": message_id,
            "timestamp": at.isoformat(),
            "properties": {"segment": change.segment_key},
        }
        rows.append(
            (event_id, SOURCE, message_id, "track", name, change.profile_id, at, at, at, payload)
        )
    insert_rows(conn, EVENTS, columns, rows)
