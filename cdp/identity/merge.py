"""Merging profiles in the database: everything of the merged profiles moves to the survivor.

Callers hold the identity lock (`lock_identity`), so no resolver runs meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.orm import Session

from cdp.db.models import Consent, Event, Identifier, Merge, Profile, ProfileGroup, utcnow
from cdp.identity import traits as trait_rules

IDENTITY_LOCK = 7_400_002


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

    session.execute(
        update(Identifier)
        .where(Identifier.profile_id.in_(merged_ids))
        .values(profile_id=survivor_id)
    )
    session.execute(
        update(Event).where(Event.profile_id.in_(merged_ids)).values(profile_id=survivor_id)
    )
    _merge_consents(session, survivor_id, merged_ids)
    _merge_groups(session, survivor_id, merged_ids)
    # Old ids, and ids that were merged into them earlier, resolve to the survivor in one hop.
    session.execute(
        update(Profile)
        .where(or_(Profile.id.in_(merged_ids), Profile.merged_into.in_(merged_ids)))
        .values(merged_into=survivor_id, traits={}, trait_sources={})
    )
    now = utcnow()
    session.execute(
        insert(Merge),
        [
            {
                "kind": "merge",
                "survivor_id": survivor_id,
                "merged_id": m,
                "reason": reason,
                "actor": actor,
                "event_id": event_id,
                "created_at": now,
            }
            for m in merged_ids
        ],
    )
    session.flush()
    return survivor


def _merge_consents(session: Session, survivor_id: str, merged_ids: Sequence[str]) -> None:
    rows = list(
        session.scalars(select(Consent).where(Consent.profile_id.in_([survivor_id, *merged_ids])))
    )
    newest: dict[tuple[str, str], Consent] = {}
    for row in rows:
        key = (row.purpose, row.channel)
        if key not in newest or row.updated_at > newest[key].updated_at:
            newest[key] = row
    values = [
        {
            "profile_id": survivor_id,
            "purpose": r.purpose,
            "channel": r.channel,
            "status": r.status,
            "source": r.source,
            "updated_at": r.updated_at,
        }
        for r in newest.values()
    ]
    session.execute(delete(Consent).where(Consent.profile_id.in_([survivor_id, *merged_ids])))
    if values:
        session.execute(insert(Consent), values)


def _merge_groups(session: Session, survivor_id: str, merged_ids: Sequence[str]) -> None:
    rows = sorted(
        session.scalars(
            select(ProfileGroup).where(ProfileGroup.profile_id.in_([survivor_id, *merged_ids]))
        ),
        key=lambda r: r.updated_at,
    )
    merged: dict[str, tuple[dict, datetime]] = {}
    for row in rows:  # oldest first: newer group traits win
        traits, _ = merged.get(row.group_id, ({}, row.updated_at))
        merged[row.group_id] = ({**traits, **row.traits}, row.updated_at)
    session.execute(
        delete(ProfileGroup).where(ProfileGroup.profile_id.in_([survivor_id, *merged_ids]))
    )
    if merged:
        session.execute(
            insert(ProfileGroup),
            [
                {"profile_id": survivor_id, "group_id": g, "traits": t, "updated_at": at}
                for g, (t, at) in merged.items()
            ],
        )
