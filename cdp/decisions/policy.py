"""The contact policy: which candidate offers a profile may get now, given its history.

Pure functions over what `history.History` loaded for the profile, so every rule is testable on
its own and the pipeline reads the store once per decision. Each rule returns the reason it
removes an offer (logged with the decision), or None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cdp.config import CapConfig, DecisionsConfig, QuietHoursConfig
from cdp.decisions.offers import OfferSpec
from cdp.segments.conditions import parse_duration

NEGATIVE = ("DISMISS", "REJECT")
ACCEPTED = ("ACCEPT", "CONVERSION")
SUCCESS = ("CLICK", "ACCEPT", "CONVERSION")


@dataclass(frozen=True)
class Presented:
    offer_id: str
    channel: str
    at: datetime


@dataclass(frozen=True)
class Responded:
    offer_id: str
    outcome: str
    at: datetime


@dataclass(frozen=True)
class History:
    """A profile's presentations and responses (its merged-away ids' included)."""

    presented: list[Presented]
    responded: list[Responded]
    budgets_used: Mapping[str, int]
    """Per budgeted offer: presentations to anyone, ever."""


def quiet_now(config: DecisionsConfig, channel: str, now: datetime, timezone: object) -> str | None:
    hours = config.quiet_hours.get(channel)
    if hours is None:
        return None
    local = now.astimezone(_zone(timezone, config.default_timezone)).time()
    if _within(local, hours):
        return f"quiet hours {hours.start} to {hours.end} on {channel} ({local:%H:%M} there)"
    return None


class Caps:
    """The caps' counts for one decision, counted once: per cap, presentations in its window
    (on its channel, or on this one for per-channel caps), in all and per offer."""

    def __init__(
        self, caps: list[CapConfig], channel: str, history: History, now: datetime
    ) -> None:
        self.channel = channel
        self.counted: list[tuple[CapConfig, int, Counter[str]]] = []
        for cap in caps:
            if cap.channel is not None and cap.channel != channel:
                continue
            since = now - parse_duration(cap.within, "caps.within")
            seen = [
                p
                for p in history.presented
                if p.at >= since
                and (cap.per != "channel" or p.channel == channel)
                and (cap.channel is None or p.channel == cap.channel)
            ]
            self.counted.append((cap, len(seen), Counter(p.offer_id for p in seen)))

    def reason(self, offer: OfferSpec) -> str | None:
        for cap, total, per_offer in self.counted:
            count = per_offer[offer.id] if cap.per == "offer" else total
            if count >= cap.max:
                scope = {"profile": "per profile", "channel": f"on {self.channel}"}
                where = scope.get(cap.per, "of this offer")
                return f"{count} of {cap.max} {where} within {cap.within}"
        return None


def suppression_reason(
    config: DecisionsConfig, offer: OfferSpec, history: History, now: datetime
) -> str | None:
    rule = config.suppression
    since = now - parse_duration(rule.within, "suppression.within")
    negatives = sum(
        1
        for r in history.responded
        if r.offer_id == offer.id and r.outcome in NEGATIVE and r.at >= since
    )
    if negatives >= rule.negatives:
        return f"suppressed: {negatives} dismissals or rejections within {rule.within}"
    return None


def prerequisite_reason(offer: OfferSpec, history: History) -> str | None:
    for needed, outcome in offer.prerequisites:
        if outcome == "accepted":
            done = any(r.offer_id == needed and r.outcome in ACCEPTED for r in history.responded)
        else:
            done = any(p.offer_id == needed for p in history.presented) or any(
                r.offer_id == needed for r in history.responded
            )
        if not done:
            return f"prerequisite: {needed} not {outcome} yet"
    return None


def budget_reason(offer: OfferSpec, history: History) -> str | None:
    if offer.budget is None:
        return None
    used = history.budgets_used.get(offer.id, 0)
    return f"budget: {used} of {offer.budget} presentations used" if used >= offer.budget else None


def _zone(name: object, default: str) -> ZoneInfo:
    for candidate in (name, default):
        if isinstance(candidate, str) and candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _within(now: time, hours: QuietHoursConfig) -> bool:
    start, end = time.fromisoformat(hours.start), time.fromisoformat(hours.end)
    if start <= end:
        return start <= now < end
    return now >= start or now < end  # over midnight, e.g. 21:00 to 08:00


def longest(config: DecisionsConfig) -> timedelta:
    """How far back caps and suppression look."""
    periods = [c.within for c in config.caps] + [config.suppression.within]
    return max(parse_duration(p, "within") for p in periods)
