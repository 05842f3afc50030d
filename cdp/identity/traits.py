"""Per-trait last-write-wins with provenance.

Every trait value carries a stamp: the source it came from, the event, and the event's time. A
value replaces another when its (source priority, time) is not lower, so a late-arriving older
event never overwrites a newer value, and a trusted source (say the CRM) is not overwritten by a
less trusted one (say web forms) however much newer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

Stamp = dict[str, Any]
"""{"source": str, "event_id": int | None, "at": ISO-8601 UTC with microseconds}"""


def stamp(source: str, event_id: int | None, at: datetime) -> Stamp:
    # Fixed-width ISO strings compare in time order, so stamps compare without parsing.
    return {
        "source": source,
        "event_id": event_id,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
    }


def wins(new: Stamp, old: Stamp | None, priority: Mapping[str, int]) -> bool:
    if old is None:
        return True
    return (priority.get(new["source"], 0), new["at"]) >= (
        priority.get(old["source"], 0),
        old["at"],
    )


def apply(
    traits: dict[str, Any],
    sources: dict[str, Stamp],
    incoming: Mapping[str, Any],
    new: Stamp,
    priority: Mapping[str, int],
) -> bool:
    """Apply `incoming` traits stamped `new`; returns whether anything changed."""
    changed = False
    for key, value in incoming.items():
        if wins(new, sources.get(key), priority):
            if traits.get(key, _MISSING) != value or sources.get(key) != new:
                changed = True
            traits[key] = value
            sources[key] = new
    return changed


def merge(
    traits: dict[str, Any],
    sources: dict[str, Stamp],
    other_traits: Mapping[str, Any],
    other_sources: Mapping[str, Stamp],
    priority: Mapping[str, int],
) -> None:
    """Fold another profile's traits into these, trait by trait."""
    for key, value in other_traits.items():
        theirs = other_sources.get(key)
        if key not in traits or (theirs is not None and wins(theirs, sources.get(key), priority)):
            traits[key] = value
            if theirs is not None:
                sources[key] = theirs


_MISSING = object()
