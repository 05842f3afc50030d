"""Writing what events say about a person: consents and group memberships, newest wins.

`latest` maps (profile id, purpose or group id) to what the newest event of the chunk said; a
row already stored wins if it is newer still (events can arrive late)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from cdp.identity.merge import CONSENTS, GROUPS


def upsert_consents(
    s: Connection, latest: Mapping[tuple[str, str], tuple[str, str, datetime]]
) -> None:
    """Channel "*" consents: {(profile, purpose): (status, source, at)}."""
    if not latest:
        return
    existing = {
        (r.profile_id, r.purpose): r.updated_at
        for r in s.execute(
            select(CONSENTS.c.profile_id, CONSENTS.c.purpose, CONSENTS.c.updated_at).where(
                CONSENTS.c.profile_id.in_({p for p, _ in latest}), CONSENTS.c.channel == "*"
            )
        )
    }
    fresh, changed = [], []
    for (profile_id, purpose), (status, source, at) in latest.items():
        row = {
            "pid": profile_id,
            "b_purpose": purpose,
            "b_channel": "*",
            "b_status": status,
            "b_source": source,
            "at": at,
        }
        if (profile_id, purpose) not in existing:
            fresh.append(row)
        elif existing[(profile_id, purpose)] <= at:
            changed.append(row)
    if fresh:
        s.execute(
            insert(CONSENTS).values(
                profile_id=bindparam("pid"),
                purpose=bindparam("b_purpose"),
                channel=bindparam("b_channel"),
                status=bindparam("b_status"),
                source=bindparam("b_source"),
                updated_at=bindparam("at"),
            ),
            fresh,
        )
    if changed:
        s.execute(
            update(CONSENTS)
            .where(
                CONSENTS.c.profile_id == bindparam("pid"),
                CONSENTS.c.purpose == bindparam("b_purpose"),
                CONSENTS.c.channel == bindparam("b_channel"),
            )
            .values(
                status=bindparam("b_status"),
                source=bindparam("b_source"),
                updated_at=bindparam("at"),
            ),
            changed,
        )


def upsert_groups(
    s: Connection, latest: Mapping[tuple[str, str], tuple[dict[str, Any], datetime]]
) -> None:
    """Group memberships: {(profile, group): (traits, at)}; traits fold in, newer over older."""
    for (profile_id, group_id), (traits, at) in latest.items():
        row = s.execute(
            select(GROUPS.c.traits, GROUPS.c.updated_at).where(
                GROUPS.c.profile_id == profile_id, GROUPS.c.group_id == group_id
            )
        ).first()
        if row is None:
            s.execute(
                insert(GROUPS).values(
                    profile_id=profile_id, group_id=group_id, traits=traits, updated_at=at
                )
            )
        elif row.updated_at <= at:
            s.execute(
                update(GROUPS)
                .where(GROUPS.c.profile_id == profile_id, GROUPS.c.group_id == group_id)
                .values(traits={**row.traits, **traits}, updated_at=at)
            )
