"""Keeping computed traits and segment memberships current.

- `refresh`: incremental, inside the ingestion transaction, for the profiles a chunk of events
  touched. A computed trait is recomputed for the profiles that got an event it counts; a
  segment is re-evaluated for the profiles whose traits, identifiers or consents changed (new,
  merged), that got an event one of its conditions counts, whose computed traits it reads were
  recomputed, or whose membership of a segment it refers to changed.
- `recompute`: bulk, for every profile, in one statement per computed trait and per segment
  (on definition change, on schedule, and for what time alone can change: windows).
Both run the same compiled SQL; incremental just restricts it to a list of profiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, update

from cdp.db.models import Segment
from cdp.segments import definitions
from cdp.segments.compiler import Compiler
from cdp.segments.computed import refresh_values
from cdp.segments.conditions import EventFilter
from cdp.segments.definitions import Definitions
from cdp.segments.membership import Change, apply_changes

EventKinds = Mapping[str, set[tuple[str, str | None]]]
"""Per profile: the (type, name) of the events it just got."""


class Evaluator:
    """Holds the parsed definitions of one process, reloaded when they change in the store."""

    def __init__(self) -> None:
        self._stamp: tuple[object, ...] | None = None
        self._definitions = Definitions()

    def definitions(self, conn: Connection) -> Definitions:
        current = definitions.stamp(conn)
        if current != self._stamp:
            self._definitions = definitions.load(conn)
            self._stamp = current
        return self._definitions

    def refresh(
        self, conn: Connection, now: datetime, changed: set[str], events: EventKinds
    ) -> list[Change]:
        """Incremental evaluation for the profiles of one ingested chunk; `changed` are those
        whose traits, identifiers or consents changed (new and merged ones included)."""
        defs = self.definitions(conn)
        if not defs.segments and not defs.computed:
            return []
        recomputed: dict[str, set[str]] = {}
        for key, computed in defs.computed.items():
            scope = changed | _receiving(events, [computed.events])
            if scope:
                refresh_values(conn, computed, now, sorted(scope))
                recomputed[key] = scope
        moved: dict[str, set[str]] = {}
        changes: list[Change] = []
        for key, segment in defs.segments.items():
            scope = changed | _receiving(events, segment.events)
            for name in segment.computed:
                scope |= recomputed.get(name, set())
            for ref in segment.segments:
                scope |= moved.get(ref, set())
            if not scope:
                continue
            done = self._evaluate(conn, defs, key, now, sorted(scope))
            moved[key] = {c.profile_id for c in done}
            changes.extend(done)
        return changes

    def recompute(
        self,
        conn: Connection,
        now: datetime,
        segments: Iterable[str] | None = None,
        computed: Iterable[str] | None = None,
    ) -> list[Change]:
        """Bulk: the given computed traits, then the given segments (None: all of them) and the
        segments that refer to those, for every profile."""
        defs = self.definitions(conn)
        for key in defs.computed if computed is None else computed:
            refresh_values(conn, defs.computed[key], now)
        keys = list(defs.segments) if segments is None else defs.dependents(set(segments))
        changes: list[Change] = []
        for key in keys:
            changes.extend(self._evaluate(conn, defs, key, now, None))
            conn.execute(update(Segment).where(Segment.key == key).values(computed_at=now))
        return changes

    def sweep(self, conn: Connection, now: datetime) -> list[Change]:
        """What time alone can change: windowed computed traits and the segments reading them
        or having windows (and the segments that refer to those)."""
        defs = self.definitions(conn)
        timed = [k for k, c in defs.computed.items() if c.events.within is not None]
        return self.recompute(conn, now, defs.timed_segments(), timed)

    def _evaluate(
        self,
        conn: Connection,
        defs: Definitions,
        key: str,
        now: datetime,
        scope: Sequence[str] | None,
    ) -> list[Change]:
        compiler = Compiler(conn.dialect.name, now, scope, defs.aggregates)
        rows = conn.execute(compiler.changes(key, defs.segments[key].condition)).all()
        return apply_changes(conn, key, rows, now) if rows else []


def _receiving(events: EventKinds, filters: Sequence[EventFilter]) -> set[str]:
    if not filters:
        return set()
    return {
        profile_id
        for profile_id, kinds in events.items()
        if any(f.matches(t, n) for f in filters for t, n in kinds)
    }
