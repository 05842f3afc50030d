"""Splitting a profile: undo links by removing identity-graph edges and recomputing the profile
as the connected components of what is left.

The component holding the strongest identifier (user_id before email before …) keeps the
profile's id; every other component becomes a new profile. Each event goes back to the component
of its strongest identifier, and each profile's traits, consents and groups are rebuilt by
replaying its own events, so nothing one person said stays on the other's profile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from cdp.db.models import (
    Consent,
    Event,
    Identifier,
    IdentityEdge,
    Merge,
    Profile,
    ProfileGroup,
    new_id,
    utcnow,
)
from cdp.errors import NotFoundError, UserError
from cdp.identity import facts
from cdp.identity import traits as trait_rules
from cdp.identity.merge import lock_identity
from cdp.identity.rules import Rules
from cdp.profiles import get_profile

Key = tuple[str, str]


def split_profile(
    session: Session,
    rules: Rules,
    priority: Mapping[str, int],
    profile_id: str,
    detach: Sequence[Key],
    *,
    actor: str,
    reason: str,
) -> list[str]:
    """Remove every edge touching the `detach` identifiers of the profile; returns the ids of the
    resulting profiles, the original first."""
    lock_identity(session)
    profile = get_profile(session, profile_id)
    if profile is None:
        raise NotFoundError(f"profileId: no profile {profile_id!r}")
    idents = {
        (i.type, i.value): i
        for i in session.scalars(select(Identifier).where(Identifier.profile_id == profile.id))
    }
    wanted = [_normalised(rules, t, v) for t, v in detach]
    for key in wanted:
        if key not in idents:
            raise UserError(
                f"identifiers: {key[0]}={key[1]!r} is not an identifier of this profile"
            )
    now = utcnow()
    ids = {i.id: i for i in idents.values()}
    targets = {idents[k].id for k in wanted}
    edges = list(
        session.scalars(
            select(IdentityEdge).where(
                IdentityEdge.removed_at.is_(None),
                or_(IdentityEdge.a_id.in_(ids), IdentityEdge.b_id.in_(ids)),
            )
        )
    )
    for edge in edges:
        if edge.a_id in targets or edge.b_id in targets:
            edge.removed_at, edge.removed_by = now, actor
    components = _components(ids, [(e.a_id, e.b_id) for e in edges if e.removed_at is None])
    if len(components) == 1:
        raise UserError(
            "identifiers: the profile stays connected through other links; nothing to split"
        )

    def strength(component: set[int]) -> tuple[int, datetime]:
        return min((rules.priority(ids[i].type), ids[i].first_seen) for i in component)

    components.sort(key=strength)
    owner: dict[Key, str] = {}
    result = [profile.id]
    for index, component in enumerate(components):
        pid = profile.id
        if index:
            pid = new_id()
            first = min(ids[i].first_seen for i in component)
            session.add(Profile(id=pid, traits={}, trait_sources={}, created_at=first))
            session.flush()
            session.execute(
                update(Identifier).where(Identifier.id.in_(component)).values(profile_id=pid)
            )
            session.add(
                Merge(
                    kind="split",
                    survivor_id=profile.id,
                    merged_id=pid,
                    reason=reason,
                    actor=actor,
                    created_at=now,
                )
            )
            result.append(pid)
        for i in component:
            owner[(ids[i].type, ids[i].value)] = pid
    _replay(session, rules, priority, profile.id, owner, result)
    return result


def _normalised(rules: Rules, type_name: str, value: str) -> Key:
    try:
        return type_name, rules.normalise(type_name, value)
    except UserError:
        return type_name, value  # not a valid value: reported as not on the profile


def _components(nodes: Mapping[int, object], links: Sequence[tuple[int, int]]) -> list[set[int]]:
    parent = {n: n for n in nodes}

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in links:
        if a in parent and b in parent:
            parent[root(a)] = root(b)
    groups: dict[int, set[int]] = defaultdict(set)
    for n in nodes:
        groups[root(n)].add(n)
    return list(groups.values())


def _replay(
    session: Session,
    rules: Rules,
    priority: Mapping[str, int],
    original: str,
    owner: Mapping[Key, str],
    profiles: list[str],
) -> None:
    """Give each event to the profile of its strongest identifier; rebuild what events carried."""
    traits: dict[str, tuple[dict, dict]] = {p: ({}, {}) for p in profiles}
    consents: dict[tuple[str, str], tuple[bool, str, datetime]] = {}
    groups: dict[tuple[str, str], tuple[dict, datetime]] = {}
    moves: dict[str, list[int]] = defaultdict(list)
    events = session.execute(
        select(Event.id, Event.source, Event.type, Event.timestamp, Event.payload)
        .where(Event.profile_id == original)
        .order_by(Event.timestamp, Event.id)
    )
    for event in events:
        found = rules.extract(event.payload)
        pid = next((owner[k] for k in found.identifiers if k in owner), original)
        if pid != original:
            moves[pid].append(event.id)
        stamp = trait_rules.stamp(event.source, event.id, event.timestamp)
        trait_rules.apply(*traits[pid], facts.person_traits(event.payload), stamp, priority)
        for purpose, granted in facts.consent_preferences(event.payload).items():
            consents[(pid, purpose)] = (granted, event.source, event.timestamp)
        for type_name, group_id in found.shared:
            if type_name == "group_id":
                old, _ = groups.get((pid, group_id), ({}, event.timestamp))
                groups[(pid, group_id)] = (
                    {**old, **facts.group_traits(event.payload)},
                    event.timestamp,
                )
    for pid, event_ids in moves.items():
        session.execute(update(Event).where(Event.id.in_(event_ids)).values(profile_id=pid))
    for pid, (values, sources) in traits.items():
        session.execute(
            update(Profile)
            .where(Profile.id == pid)
            .values(traits=values, trait_sources=sources, updated_at=utcnow())
        )
    # Event-derived consents are the channel "*" rows (see the resolver); rows for a specific
    # channel were set by other means and stay with the original profile.
    session.execute(delete(Consent).where(Consent.profile_id == original, Consent.channel == "*"))
    session.execute(delete(ProfileGroup).where(ProfileGroup.profile_id == original))
    if consents:
        session.execute(
            insert(Consent),
            [
                {
                    "profile_id": p,
                    "purpose": purpose,
                    "channel": "*",
                    "status": "granted" if granted else "denied",
                    "source": source,
                    "updated_at": at,
                }
                for (p, purpose), (granted, source, at) in consents.items()
            ],
        )
    if groups:
        session.execute(
            insert(ProfileGroup),
            [
                {"profile_id": p, "group_id": g, "traits": t, "updated_at": at}
                for (p, g), (t, at) in groups.items()
            ],
        )
