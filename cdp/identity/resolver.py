"""Identity resolution: applies stored events to profiles, a chunk at a time.

For each event, in the order the events were stored:

1. Extract its identifiers (`Rules.extract`), strongest first. An `alias` also carries its
   `previousId`, taken as the `user_id` it names if that exists, else as an `anonymous_id`.
2. Find the profiles holding any of them.
   - None: a new profile gets all of them.
   - One or more: the oldest is the survivor. If merging them all and adding the new identifiers
     keeps every identifier type within its limit (counting only identifiers seen within the
     type's window), they are merged and the new identifiers added.
   - Otherwise the message's lowest-priority identifiers are dropped and matching is retried.

   Example, with the default rules (user_id: limit 1; anonymous_id: priority 5). Profile A holds
   `user_id=u1, anonymous_id=a1`; profile B holds `user_id=u2`. A message arrives with
   `userId=u2, anonymousId=a1` (u2 logged in on u1's laptop). Merging A and B would give the
   survivor two user_ids, over the limit of 1, so `anonymous_id=a1` (the lowest priority) is
   dropped; `user_id=u2` alone matches B, and the event goes to B. A and B stay apart.
3. Traits (per trait, last write wins by event time and source priority), consent
   (`context.consent.categoryPreferences`) and group membership are applied to the profile;
   `run` returns each event's profile, and the caller writes the event with it.

Every new link is recorded as an edge of the identity graph (the message's strongest identifier
to each identifier it brought to the profile) with the event as provenance; every merge is
recorded with its reason. The caller holds the identity lock for the whole transaction.

All of it happens in memory and is written once, at the end of the chunk, one multi-row
statement per table; a profile made and merged away within one chunk is never written.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, cast, select
from sqlalchemy.orm import Session

from cdp.db.bulk import insert_rows, next_ids, update_rows
from cdp.db.engine import json_loads
from cdp.db.models import Identifier, IdentityEdge, Profile, new_id
from cdp.db.pairs import pairs_in
from cdp.identity import facts
from cdp.identity import traits as trait_rules
from cdp.identity.merge import move_merged, record_merges
from cdp.identity.rules import InvalidIdentifier, Rules
from cdp.identity.upserts import upsert_consents, upsert_groups

log = logging.getLogger(__name__)

Key = tuple[str, str]
LOOKUP_CHUNK = 400
# Core tables for executemany UPDATEs (the ORM's bulk-update mode wants primary-key names).
IDENTIFIERS, PROFILES = Identifier.__table__, Profile.__table__
EDGES = IdentityEdge.__table__


IDENTIFIER_ROWS = select(
    IDENTIFIERS.c.id,
    IDENTIFIERS.c.type,
    IDENTIFIERS.c.value,
    IDENTIFIERS.c.profile_id,
    IDENTIFIERS.c.last_seen,
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    source: str
    type: str
    timestamp: datetime
    payload: Mapping[str, Any]


@dataclass(slots=True)
class Outcome:
    event_id: int
    profile_id: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MergeRecord:
    survivor_id: str
    merged_ids: list[str]
    reason: str


@dataclass(slots=True)
class _Id:
    key: Key
    profile_id: str
    seen: datetime
    id: int | None = None  # None until inserted


@dataclass(slots=True)
class _Profile:
    id: str
    created_at: datetime
    stored: tuple[str, str] | None
    """The stored traits and trait sources as JSON text, until first used: most events (a track
    from a known user) never touch them, and decoding every loaded profile's costs more than
    reading it."""
    decoded: tuple[dict[str, Any], dict[str, Any]] | None = None
    ids: list[_Id] = field(default_factory=list)
    new: bool = False
    complete: bool = True
    """Whether `ids` holds all of the profile's identifiers (loaded only when limits need them)."""

    @property
    def traits(self) -> dict[str, Any]:
        return self._decoded()[0]

    @property
    def sources(self) -> dict[str, Any]:
        return self._decoded()[1]

    def _decoded(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.decoded is None:
            assert self.stored is not None
            self.decoded = (json_loads(self.stored[0]), json_loads(self.stored[1]))
            self.stored = None
        return self.decoded


class Resolver:
    def __init__(
        self, session: Session, rules: Rules, priority: Mapping[str, int], now: datetime
    ) -> None:
        self.session = session
        self.conn = session.connection()  # Core: no ORM bookkeeping on the hot path
        self.dialect = self.conn.dialect
        self.rules = rules
        self.priority = priority
        self.now = now
        self.ids: dict[Key, _Id] = {}
        self.profiles: dict[str, _Profile] = {}
        self.merges: list[MergeRecord] = []
        self.redirect: dict[str, str] = {}
        self.loaded: set[str] = set()
        """Profiles that were already stored when the chunk began."""
        # What the chunk decided, written by `_flush` at its end:
        self.new_profiles: dict[str, _Profile] = {}
        self.merge_rows: list[dict[str, Any]] = []
        self.new_ids: list[_Id] = []
        self.seen: dict[Key, datetime] = {}
        self.edges: list[tuple[Key, Key, int, str]] = []
        self.dirty: set[str] = set()
        self.consents: dict[tuple[str, str], tuple[str, str, datetime]] = {}
        self.groups: dict[tuple[str, str], tuple[dict[str, Any], datetime]] = {}
        self.changed: set[str] = set()
        """After `run`: the profiles whose traits, identifiers or consents the chunk changed,
        new ones and merge survivors included, and the profiles merged away."""

    # --- entry point ---------------------------------------------------------------------------

    def run(self, events: Sequence[StoredEvent]) -> list[Outcome]:
        extracted = [(event, self._identifiers(event)) for event in events]
        self._load(
            {key for _, (ids, _) in extracted for key in ids}
            | {key for event in events for key in self._alias_candidates(event)}
        )
        extracted = [
            (event, self._with_alias(event, keys), shared) for event, (keys, shared) in extracted
        ]
        # Limits are checked only where an event adds identifiers or links profiles: load the
        # full identifier lists of those profiles in one go (others stay partial).
        self._complete(
            {
                owner
                for _, keys, _ in extracted
                for owners in [{self.ids[k].profile_id for k in keys if k in self.ids}]
                if len(owners) > 1 or any(k not in self.ids for k in keys)
                for owner in owners
            }
        )
        results: list[Outcome] = []
        for event, keys, shared in extracted:
            if keys:
                profile = self._resolve(event, keys)
                self._apply(event, profile, shared)
                outcome = Outcome(event.id, profile.id)
            else:
                outcome = Outcome(event.id, None, "no usable identifier")
            results.append(outcome)
        for outcome in results:  # events applied before a later merge in this chunk
            outcome.profile_id = self._final(outcome.profile_id)
        # A survivor made in this chunk may itself have been folded into another since.
        self.merges = [
            MergeRecord(self._final(m.survivor_id) or m.survivor_id, m.merged_ids, m.reason)
            for m in self.merges
        ]
        touched = (
            self.new_profiles.keys()
            | self.dirty
            | {i.profile_id for i in self.new_ids}
            | {profile_id for profile_id, _ in self.consents}
        )
        self.changed = {self._final(p) or p for p in touched} | {
            merged for m in self.merges for merged in m.merged_ids
        }
        self._flush()
        return results

    # --- matching ------------------------------------------------------------------------------

    def _identifiers(self, event: StoredEvent) -> tuple[list[Key], list[Key]]:
        found = self.rules.extract(event.payload)
        for type_name, value, reason in found.rejected:
            log.debug("event %s: identifier %s=%r dropped: %s", event.id, type_name, value, reason)
        return found.identifiers, found.shared

    def _alias_candidates(self, event: StoredEvent) -> tuple[Key, Key] | tuple[()]:
        if event.type != "alias":
            return ()
        try:
            value = self.rules.normalise("anonymous_id", event.payload.get("previousId"))
        except InvalidIdentifier:
            return ()
        return (("user_id", value), ("anonymous_id", value))

    def _with_alias(self, event: StoredEvent, keys: list[Key]) -> list[Key]:
        candidates = self._alias_candidates(event)
        if not candidates:
            return keys
        previous = candidates[0] if candidates[0] in self.ids else candidates[1]
        if previous in keys:
            return keys
        return sorted([*keys, previous], key=lambda k: self.rules.priority(k[0]))

    def _resolve(self, event: StoredEvent, keys: list[Key]) -> _Profile:
        attempt = keys
        while True:
            matched = list(dict.fromkeys(self.ids[k].profile_id for k in attempt if k in self.ids))
            if not matched:
                return self._create(event, attempt)
            profiles = sorted(
                (self.profiles[p] for p in matched), key=lambda p: (p.created_at, p.id)
            )
            if self._fits(profiles, attempt):
                if len(profiles) > 1:
                    return self._merge(event, profiles[0], profiles[1:], attempt)
                self._attach(event, profiles[0], attempt)
                return profiles[0]
            attempt = self._drop_weakest(attempt)
            log.debug("event %s: limits exceeded, retrying with %s", event.id, attempt)

    def _fits(self, profiles: list[_Profile], keys: list[Key]) -> bool:
        adding = [k for k in keys if k not in self.ids]
        if len(profiles) == 1 and not adding:
            return True
        self._complete({p.id for p in profiles if not p.complete})
        adding_by_type: dict[str, int] = defaultdict(int)
        for type_name, _ in adding:
            adding_by_type[type_name] += 1
        # Only the types that change are checked: those added to, and on a merge every type.
        merging = len(profiles) > 1
        seen_by_type: dict[str, list[datetime]] = defaultdict(list)
        for profile in profiles:
            for ident in profile.ids:
                if merging or ident.key[0] in adding_by_type:
                    seen_by_type[ident.key[0]].append(ident.seen)
        changed = set(adding_by_type) | set(seen_by_type)
        return not any(
            self.rules.over_limit(t, seen_by_type[t], self.now, adding_by_type[t]) for t in changed
        )

    def _drop_weakest(self, keys: list[Key]) -> list[Key]:
        weakest = max(self.rules.priority(t) for t, _ in keys)
        kept = [k for k in keys if self.rules.priority(k[0]) != weakest]
        # All of one priority (e.g. two e-mails that belong to two people): keep the first.
        return kept or keys[:1]

    def _create(self, event: StoredEvent, keys: list[Key]) -> _Profile:
        profile = _Profile(new_id(), event.timestamp, None, ({}, {}), new=True)
        self.profiles[profile.id] = profile
        self.new_profiles[profile.id] = profile
        per_type: dict[str, int] = defaultdict(int)
        kept = []
        for key in keys:  # a message can carry more values of a type than the type's limit
            per_type[key[0]] += 1
            if not self.rules.over_limit(key[0], [], self.now, per_type[key[0]]):
                kept.append(key)
        self._attach(event, profile, kept)
        return profile

    def _attach(self, event: StoredEvent, profile: _Profile, keys: list[Key]) -> None:
        anchor = keys[0]
        anchor_owner = self.ids[anchor].profile_id if anchor in self.ids else None
        for key in keys:
            ident = self.ids.get(key)
            if ident is None:
                ident = _Id(key, profile.id, event.timestamp)
                self.ids[key] = ident
                profile.ids.append(ident)
                self.new_ids.append(ident)
                owner = None
            else:
                owner = ident.profile_id
                if event.timestamp > ident.seen:
                    ident.seen = event.timestamp
                    if ident.id is not None:
                        self.seen[key] = event.timestamp
            if key != anchor and (owner is None or owner != anchor_owner):
                self.edges.append((anchor, key, event.id, event.source))

    # --- merging -------------------------------------------------------------------------------

    def _merge(
        self, event: StoredEvent, survivor: _Profile, others: list[_Profile], keys: list[Key]
    ) -> _Profile:
        """Merge in memory; `_flush` writes it. A profile made earlier in this chunk is simply
        folded in (it was never written, so nothing refers to it); a stored one is recorded."""
        self._attach(event, survivor, keys)  # the edges say why these are one person
        linking = ", ".join(f"{t}={v}" for t, v in keys)
        reason = (
            f"{event.type} event {event.payload.get('messageId')} from {event.source} "
            f"linked {linking}"
        )
        stored = []
        for other in others:
            trait_rules.merge(
                survivor.traits, survivor.sources, other.traits, other.sources, self.priority
            )
            for ident in other.ids:
                ident.profile_id = survivor.id
                survivor.ids.append(ident)
            del self.profiles[other.id]
            self.redirect[other.id] = survivor.id
            if other.new:
                self.new_profiles.pop(other.id)
            else:
                stored.append(other.id)
                self.merge_rows.append(
                    {
                        "survivor_id": survivor.id,
                        "merged_id": other.id,
                        "reason": reason,
                        "actor": f"source:{event.source}",
                        "event_id": event.id,
                    }
                )
        self.dirty.add(survivor.id)
        if stored:
            self.merges.append(MergeRecord(survivor.id, stored, reason))
        return survivor

    # --- what the event says about the person --------------------------------------------------

    def _apply(self, event: StoredEvent, profile: _Profile, shared: list[Key]) -> None:
        payload = event.payload
        incoming = facts.person_traits(payload)
        if incoming:
            new = trait_rules.stamp(event.source, event.id, event.timestamp)
            if trait_rules.apply(profile.traits, profile.sources, incoming, new, self.priority):
                self.dirty.add(profile.id)
        for purpose, granted in facts.consent_preferences(payload).items():
            key = (profile.id, purpose)
            if key not in self.consents or self.consents[key][2] <= event.timestamp:
                status = "granted" if granted else "denied"
                self.consents[key] = (status, event.source, event.timestamp)
        for type_name, group_id in shared:
            if type_name == "group_id":
                key = (profile.id, group_id)
                old, _ = self.groups.get(key, ({}, event.timestamp))
                self.groups[key] = ({**old, **facts.group_traits(payload)}, event.timestamp)

    # --- reading and writing -------------------------------------------------------------------

    def _load(self, keys: set[Key]) -> None:
        """The stored identifiers among `keys`, and the profiles holding them."""
        ordered = sorted(keys - self.ids.keys())
        found: list[_Id] = []
        for start in range(0, len(ordered), LOOKUP_CHUNK):
            part = ordered[start : start + LOOKUP_CHUNK]
            found.extend(
                _Id((row.type, row.value), row.profile_id, row.last_seen, row.id)
                for row in self.conn.execute(
                    IDENTIFIER_ROWS.where(
                        pairs_in(self.dialect, IDENTIFIERS.c.type, IDENTIFIERS.c.value, part)
                    )
                )
            )
        profile_ids = sorted({i.profile_id for i in found} - self.profiles.keys())
        for start in range(0, len(profile_ids), LOOKUP_CHUNK):
            for row in self.conn.execute(
                select(
                    PROFILES.c.id,
                    PROFILES.c.created_at,
                    cast(PROFILES.c.traits, Text).label("traits"),
                    cast(PROFILES.c.trait_sources, Text).label("trait_sources"),
                ).where(PROFILES.c.id.in_(profile_ids[start : start + LOOKUP_CHUNK]))
            ):
                self.loaded.add(row.id)
                self.profiles[row.id] = _Profile(
                    row.id, row.created_at, (row.traits, row.trait_sources), complete=False
                )
        for ident in found:
            self.ids[ident.key] = ident
            self.profiles[ident.profile_id].ids.append(ident)

    def _complete(self, profile_ids: set[str]) -> None:
        """Load every identifier of these stored profiles."""
        wanted = sorted(p for p in profile_ids if not self.profiles[p].complete)
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            for row in self.conn.execute(
                IDENTIFIER_ROWS.where(
                    IDENTIFIERS.c.profile_id.in_(wanted[start : start + LOOKUP_CHUNK])
                )
            ):
                key = (row.type, row.value)
                if key not in self.ids:
                    ident = _Id(key, row.profile_id, row.last_seen, row.id)
                    self.ids[key] = ident
                    self.profiles[row.profile_id].ids.append(ident)
        for profile_id in wanted:
            self.profiles[profile_id].complete = True

    def _final(self, profile_id: str | None) -> str | None:
        while profile_id in self.redirect:
            profile_id = self.redirect[profile_id]
        return profile_id

    def _flush(self) -> None:
        """Write everything the chunk decided, one statement per table where it can."""
        s = self.conn
        if self.new_profiles:
            insert_rows(
                s,
                PROFILES,
                ("id", "traits", "trait_sources", "created_at", "updated_at"),
                [
                    (p.id, p.traits, p.sources, p.created_at, self.now)
                    for p in self.new_profiles.values()
                ],
            )
            self.dirty -= self.new_profiles.keys()
        self._insert_identifiers(s)
        if self.edges:
            insert_rows(
                s,
                EDGES,
                ("a_id", "b_id", "source", "event_id", "rule", "created_at"),
                [
                    (self.ids[a].id, self.ids[b].id, source, event_id, "seen together", self.now)
                    for a, b, event_id, source in self.edges
                ],
            )
        if self.seen:
            update_rows(
                s,
                IDENTIFIERS,
                ("last_seen",),
                "id",
                [(at, self.ids[k].id) for k, at in self.seen.items()],
            )
        if self.merge_rows:
            move_merged(s, {r["merged_id"]: self._final(r["merged_id"]) for r in self.merge_rows})
            written = self.new_profiles.keys() | {r["merged_id"] for r in self.merge_rows}
            for row in self.merge_rows:  # a survivor made in this chunk and folded away later
                if row["survivor_id"] not in written and row["survivor_id"] not in self.loaded:
                    row["survivor_id"] = self._final(row["survivor_id"])
            record_merges(s, self.merge_rows)
        live_dirty = [self.profiles[p] for p in self.dirty if p in self.profiles]
        if live_dirty:
            update_rows(
                s,
                PROFILES,
                ("traits", "trait_sources", "updated_at"),
                "id",
                [(p.traits, p.sources, self.now, p.id) for p in live_dirty],
            )
        self._flush_consents(s)
        self._flush_groups(s)

    def _insert_identifiers(self, s: Connection) -> None:
        if not self.new_ids:
            return
        for ident, ident_id in zip(
            self.new_ids, next_ids(s, IDENTIFIERS, len(self.new_ids)), strict=True
        ):
            ident.id = ident_id
        insert_rows(
            s,
            IDENTIFIERS,
            ("id", "type", "value", "profile_id", "first_seen", "last_seen"),
            [(i.id, *i.key, i.profile_id, i.seen, i.seen) for i in self.new_ids],
        )

    def _flush_consents(self, s: Connection) -> None:
        latest: dict[tuple[str, str], tuple[str, str, datetime]] = {}
        for (profile_id, purpose), value in self.consents.items():
            key = (self._final(profile_id) or profile_id, purpose)
            if key not in latest or latest[key][2] <= value[2]:
                latest[key] = value
        upsert_consents(s, latest)

    def _flush_groups(self, s: Connection) -> None:
        latest: dict[tuple[str, str], tuple[dict[str, Any], datetime]] = {}
        for (profile_id, group_id), (traits, at) in self.groups.items():
            key = (self._final(profile_id) or profile_id, group_id)
            old = latest.get(key)
            latest[key] = ({**old[0], **traits}, max(at, old[1])) if old else (traits, at)
        upsert_groups(s, latest)
