"""Merging profiles in the database: everything of the merged profiles moves to the survivor.

Callers hold the identity lock (`lock_identity`), so no resolver runs meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.orm import Session

from cdp.db.models import Consent, Event, Identifier, Merge, Profile, ProfileGroup, utcnow
from cdp.identity import traits as trait_rules

IDENTITY_LOCK = 7_400_002
IDENTIFIERS, EVENTS, PROFILES = Identifier.__table__, Event.__table__, Profile.__table__
CONSENTS, GROUPS, MERGES = Consent.__table__, ProfileGroup.__table__, Merge.__table__


def lock_identity(session: Session) -> None:
    """Serialise identity changes across processes.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: writers already hold the database's
    write lock from their first statement (`BEGIN IMMEDIATE`, see `Runtime.writing`).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": IDENTITY_LOCK})


def merge_profiles(
    session: Session,
    survivor_id: str,
    merged_ids: Sequence[str],
    *,
    reason: str,
    actor: str,
    priority: Mapping[str, int],
    event_id: int | None = None,
) -> Profile:
    """Merge `merged_ids` into `survivor_id`; returns the survivor with its merged traits."""
    merged_ids = [m for m in dict.fromkeys(merged_ids) if m != survivor_id]
    # populate_existing: the resolver writes traits with Core, so a cached object may be stale.
    survivor = session.get(Profile, survivor_id, with_for_update=True, populate_existing=True)
    assert survivor is not None, survivor_id
    traits, sources = dict(survivor.traits), dict(survivor.trait_sources)
    for profile in session.scalars(select(Profile).where(Profile.id.in_(merged_ids))):
        trait_rules.merge(traits, sources, profile.traits, profile.trait_sources, priority)
    survivor.traits, survivor.trait_sources = traits, sources
    survivor.updated_at = utcnow()
    session.flush()
    conn = session.connection()
    move_merged(conn, {m: survivor_id for m in merged_ids})
    record_merges(
        conn,
        [
            {
                "survivor_id": survivor_id,
                "merged_id": m,
                "reason": reason,
                "actor": actor,
                "event_id": event_id,
            }
            for m in merged_ids
        ],
    )
    return survivor


def move_merged(conn: Connection, moves: Mapping[str, str]) -> None:
    """Move everything of each merged profile (key) to its survivor (value), in bulk.

    Traits are the caller's: it has already folded them into the survivors.
    """
    if not moves:
        return
    pairs = [{"loser": loser, "final": final} for loser, final in moves.items()]
    conn.execute(
        update(IDENTIFIERS)
        .where(IDENTIFIERS.c.profile_id == bindparam("loser"))
        .values(profile_id=bindparam("final")),
        pairs,
    )
    conn.execute(
        update(EVENTS)
        .where(EVENTS.c.profile_id == bindparam("loser"))
        .values(profile_id=bindparam("final")),
        pairs,
    )
    _newest_wins(conn, CONSENTS, ("purpose", "channel"), moves)
    _newest_wins(conn, GROUPS, ("group_id",), moves)
    # Old ids, and ids that were merged into them earlier, resolve to the survivor in one hop.
    conn.execute(
        update(PROFILES)
        .where(
            or_(PROFILES.c.id == bindparam("loser"), PROFILES.c.merged_into == bindparam("loser"))
        )
        .values(merged_into=bindparam("final"), traits={}, trait_sources={}),
        pairs,
    )


def record_merges(conn: Connection, records: Sequence[dict[str, Any]]) -> None:
    if records:
        now = utcnow()
        conn.execute(insert(MERGES), [{"kind": "merge", "created_at": now, **r} for r in records])


def _newest_wins(
    conn: Connection, table: Any, keys: tuple[str, ...], moves: Mapping[str, str]
) -> None:
    """Per key, the newest row among a survivor's and its merged profiles' becomes the survivor's.

    Group memberships also fold their traits together, newer over older."""
    involved = set(moves) | set(moves.values())
    rows = conn.execute(select(table).where(table.c.profile_id.in_(involved))).mappings().all()
    if not any(r["profile_id"] in moves for r in rows):
        return
    winners: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["updated_at"]):
        owner = moves.get(row["profile_id"], row["profile_id"])
        key = (owner, *(row[k] for k in keys))
        merged = {**row, "profile_id": owner}
        if "traits" in row and key in winners:
            merged["traits"] = {**winners[key]["traits"], **row["traits"]}
        winners[key] = merged
    conn.execute(delete(table).where(table.c.profile_id.in_({r["profile_id"] for r in rows})))
    conn.execute(insert(table), list(winners.values()))
