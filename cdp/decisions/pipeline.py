"""The decision pipeline: the next-best-offers for a profile in a context, logged.

1. candidate offers from the content providers (for the channel);
2. validity window and eligibility (all eligibility conditions in one SQL query);
3. consent for the channel;
4. contact policy: quiet hours, caps, suppression, prerequisites, budgets (cdp.decisions.policy);
5. ranking by the placement's strategy;
6. holdout: a stable, hash-based control group gets no offer (or the configured one);
7. content rendered for the channel (an offer that cannot be rendered is skipped).

The decision is written with its context, the chosen offers and their factors, and every
filtered offer with the rule that removed it; the presentations it makes are what caps and
budgets count. It all runs in one write transaction holding a per-profile lock, so two
concurrent decisions for one person cannot both slip under a cap.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, case, func, select
from sqlalchemy.orm import Session

from cdp import profiles
from cdp.components import DecisionStrategy, Ranked
from cdp.config import ComponentEntry
from cdp.db.models import (
    Consent,
    Presentation,
    Response,
    new_id,
    utcnow,
)
from cdp.db.prepared import Prepared, prepare
from cdp.decisions import policy
from cdp.decisions.catalogue import offer_cache, render
from cdp.decisions.offers import OfferSpec
from cdp.decisions.records import lock_profile, log_decision, profile_view
from cdp.errors import CDPError, NotFoundError, UserError
from cdp.runtime import Runtime
from cdp.segments.compiler import PROFILES, Compiler, relative
from cdp.segments.engine import Evaluator

MAX_LIMIT = 50
STATS_SECONDS = 10.0


@dataclass(frozen=True)
class DecisionContext:
    channel: str
    placement: str | None = None
    limit: int = 3
    time: datetime | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UserError(f"context.limit: between 1 and {MAX_LIMIT}")
        if not self.channel or len(self.channel) > 64:
            raise UserError("context.channel: 1 to 64 characters")
        if self.placement is not None and not 0 < len(self.placement) <= 128:
            raise UserError("context.placement: 1 to 128 characters")


@dataclass(frozen=True)
class Chosen:
    offer: OfferSpec
    rank: int
    score: float
    probability: float | None
    factors: Mapping[str, Any]
    content: Mapping[str, str]


@dataclass(frozen=True)
class Decided:
    id: str
    profile_id: str
    channel: str
    placement: str | None
    strategy: str
    strategy_version: str
    holdout: bool
    offers: list[Chosen]
    filtered: list[dict[str, str]]
    created_at: datetime


def decider_for(runtime: Runtime) -> Decider:
    """The process's decider (created on first use)."""
    decider = runtime.caches.get("decider")
    if decider is None:
        decider = runtime.caches["decider"] = Decider(runtime)
    return decider  # type: ignore[no-any-return]


class Decider:
    """One per process: caches offers, definitions, strategies and response statistics."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config.decisions
        self.offers = offer_cache(runtime)
        self.definitions = Evaluator()
        self._strategies: dict[str, DecisionStrategy] = {}
        self._stats: dict[str, tuple[float, dict[str, dict[str, int]]]] = {}
        self._lock = threading.Lock()
        self._statement: tuple[tuple[Any, ...], Prepared] | None = None

    # --- entry point -------------------------------------------------------------------------

    def decide(self, profile_id: str, context: DecisionContext) -> Decided:
        context.check()
        now = context.time or utcnow()
        name, strategy = self.strategy(context.placement)
        with self.runtime.writing() as session:
            profile = profiles.get_profile(session, profile_id)
            if profile is None or profile.merged_into is not None:
                raise NotFoundError(f"profile: no profile has the id {profile_id!r}")
            lock_profile(session, profile.id)
            view = profile_view(session, profile)
            filtered: list[dict[str, str]] = []
            candidates = self._candidates(session, view, context, now, filtered)
            stats = self.stats(session, context.channel)
            ranked = strategy.rank(
                [o.as_mapping() for o in candidates],
                view,
                {
                    "channel": context.channel,
                    "placement": context.placement,
                    "time": now,
                    "limit": context.limit,
                    "attributes": dict(context.attributes),
                    "stats": stats,
                },
            )
            holdout = self.in_holdout(profile.id)
            if holdout:
                filtered.extend(
                    {"offer": r.offer_id, "rule": "holdout", "detail": "profile in control group"}
                    for r in ranked
                )
                ranked = self._holdout_offer()
            by_id = {o.id: o for o in self._offers(session, now)}
            chosen = self._render(view, context, ranked, by_id, filtered)
            decided = Decided(
                new_id(),
                profile.id,
                context.channel,
                context.placement,
                name,
                strategy.version,
                holdout,
                chosen,
                filtered,
                now,
            )
            log_decision(session, decided, context)
        return decided

    # --- the steps ---------------------------------------------------------------------------

    def _offers(self, session: Session, now: datetime) -> list[OfferSpec]:
        return self.offers.offers(session, self.runtime, now)

    def _candidates(
        self,
        session: Session,
        view: Mapping[str, Any],
        context: DecisionContext,
        now: datetime,
        filtered: list[dict[str, str]],
    ) -> list[OfferSpec]:
        def drop(offer: OfferSpec, rule: str, detail: str) -> None:
            filtered.append({"offer": offer.id, "rule": rule, "detail": detail})

        offers = []
        for offer in self._offers(session, now):
            if context.channel not in offer.channels and "*" not in offer.channels:
                drop(offer, "channel", f"no content for {context.channel}")
            elif offer.valid_from is not None and now < offer.valid_from:
                drop(offer, "validity", f"valid from {offer.valid_from.isoformat()}")
            elif offer.valid_until is not None and now > offer.valid_until:
                drop(offer, "validity", f"expired {offer.valid_until.isoformat()}")
            else:
                offers.append(offer)
        eligible = self._eligible(session, view["id"], offers, now)
        kept = []
        for offer in offers:
            if not eligible.get(offer.id, True):
                drop(offer, "eligibility", "its eligibility condition does not hold")
            else:
                kept.append(offer)
        blocked = self._consent(session, view["id"], context.channel)
        if blocked is None:
            timezone = view["traits"].get(self.config.timezone_trait)
            quiet = policy.quiet_now(self.config, context.channel, now, timezone)
            blocked = ("quiet_hours", quiet) if quiet else None
        if blocked is not None:
            for offer in kept:
                drop(offer, *blocked)
            return []
        history = self._history(session, view["merged_ids"], kept, now)  # type: ignore[arg-type]
        caps = policy.Caps(self.config.caps, context.channel, history, now)
        candidates = []
        for offer in kept:
            for rule, why in (
                ("cap", caps.reason(offer)),
                ("suppression", policy.suppression_reason(self.config, offer, history, now)),
                ("prerequisite", policy.prerequisite_reason(offer, history)),
                ("budget", policy.budget_reason(offer, history)),
            ):
                if why:
                    drop(offer, rule, why)
                    break
            else:
                candidates.append(offer)
        return candidates

    def _eligible(
        self, session: Session, profile_id: str, offers: Sequence[OfferSpec], now: datetime
    ) -> dict[str, bool]:
        """Every eligibility condition evaluated in one query."""
        conditional = [o for o in offers if o.eligibility is not None]
        if not conditional:
            return {}
        prepared = self._eligibility(session, conditional, now)
        given = {"profile": profile_id, **relative(list(prepared.free), now)}
        (row,) = prepared.run(session.connection(), given)
        return {o.id: bool(row[i]) for i, o in enumerate(conditional)}

    def _eligibility(
        self, session: Session, offers: Sequence[OfferSpec], now: datetime
    ) -> Prepared:
        """The eligibility query for these offers, built once per set of offers and
        definitions (building it costs far more than running it): the profile and the times
        relative to now are its parameters."""
        defs = self.definitions.definitions(session.connection())
        key = (tuple(id(o) for o in offers), id(defs))
        with self._lock:
            cached = self._statement
            if cached is not None and cached[0] == key:
                return cached[1]
            profile = bindparam("profile", "", type_=String)  # a value to compile with
            compiler = Compiler(session.get_bind().dialect.name, now, profile, defs.aggregates)
            columns = [
                case((compiler.condition(o.eligibility), 1), else_=0).label(f"o{i}")  # type: ignore[arg-type]
                for i, o in enumerate(offers)
            ]
            statement = (
                select(*columns).select_from(compiler.from_clause()).where(PROFILES.c.id == profile)
            )
            prepared = prepare(statement, session.get_bind().dialect, _free)
            self._statement = (key, prepared)
            return prepared

    def _consent(self, session: Session, profile_id: str, channel: str) -> tuple[str, str] | None:
        purpose = self.config.consent.get(channel)
        if purpose is None:
            return None
        statuses = dict(
            session.execute(
                select(Consent.channel, Consent.status).where(
                    Consent.profile_id == profile_id,
                    Consent.purpose == purpose,
                    Consent.channel.in_([channel, "*"]),
                )
            ).all()
        )
        status = statuses.get(channel, statuses.get("*"))
        if status != "granted":
            return ("consent", f"{purpose} is {status or 'not given'} for {channel}")
        return None

    def _history(
        self, session: Session, ids: Sequence[str], offers: Sequence[OfferSpec], now: datetime
    ) -> policy.History:
        since = now - policy.longest(self.config)
        # Caps look back only so far; prerequisites for ever, at the offers they name.
        presented = [
            policy.Presented(*row)
            for row in session.execute(
                select(Presentation.offer_id, Presentation.channel, Presentation.created_at).where(
                    Presentation.profile_id.in_(ids),
                    (Presentation.created_at >= since)
                    | Presentation.offer_id.in_(_prereqs(offers)),
                )
            )
        ]
        responded = [
            policy.Responded(*row)
            for row in session.execute(
                select(Response.offer_id, Response.outcome, Response.created_at).where(
                    Response.profile_id.in_(ids)
                )
            )
        ]
        budgeted = [o.id for o in offers if o.budget is not None]
        used: dict[str, int] = {}
        if budgeted:
            used = dict(
                session.execute(
                    select(Presentation.offer_id, func.count())
                    .where(Presentation.offer_id.in_(budgeted))
                    .group_by(Presentation.offer_id)
                ).all()
            )
        return policy.History(presented, responded, used)

    def stats(self, session: Session, channel: str) -> dict[str, dict[str, int]]:
        """Per offer on this channel: presentations and successes (cached a few seconds)."""
        with self._lock:
            cached = self._stats.get(channel)
            if cached is not None and time.monotonic() - cached[0] < STATS_SECONDS:
                return cached[1]
        found: dict[str, dict[str, int]] = {}
        for offer_id, shown in session.execute(
            select(Presentation.offer_id, func.count())
            .where(Presentation.channel == channel)
            .group_by(Presentation.offer_id)
        ):
            found[offer_id] = {"shown": shown, "successes": 0}
        for offer_id, successes in session.execute(
            select(Response.offer_id, func.count(func.distinct(Response.decision_id)))
            .where(Response.channel == channel, Response.outcome.in_(policy.SUCCESS))
            .group_by(Response.offer_id)
        ):
            found.setdefault(offer_id, {"shown": 0, "successes": 0})["successes"] = successes
        with self._lock:
            self._stats[channel] = (time.monotonic(), found)
        return found

    def in_holdout(self, profile_id: str) -> bool:
        share = self.config.holdout
        if share <= 0:
            return False
        digest = hashlib.sha256(f"holdout:{profile_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < share

    def _holdout_offer(self) -> list[Ranked]:
        """What the control group gets: the configured default offer, or nothing."""
        wanted = self.config.holdout_offer
        return [] if wanted is None else [Ranked(wanted, 0.0, {"holdout": "default offer"}, 1.0)]

    def _render(
        self,
        view: Mapping[str, Any],
        context: DecisionContext,
        ranked: Sequence[Ranked],
        offers: Mapping[str, OfferSpec],
        filtered: list[dict[str, str]],
    ) -> list[Chosen]:
        chosen: list[Chosen] = []
        for item in ranked:
            if len(chosen) >= context.limit:
                break
            offer = offers.get(item.offer_id)
            if offer is None:
                continue  # a strategy returned an id it was not given
            try:
                content = render(self.runtime, offer, view, context.channel)
            except CDPError as exc:
                filtered.append({"offer": offer.id, "rule": "content", "detail": str(exc)})
                continue
            score = item.score if math.isfinite(item.score) else 0.0
            factors = {k: v for k, v in item.factors.items()}
            chosen.append(Chosen(offer, len(chosen) + 1, score, item.probability, factors, content))
        return chosen

    def strategy(self, placement: str | None) -> tuple[str, DecisionStrategy]:
        name = self.config.placements.get(placement or "", self.config.default_strategy)
        with self._lock:
            if name not in self._strategies:
                self._strategies[name] = self._create(name)
            return name, self._strategies[name]

    def _create(self, name: str) -> DecisionStrategy:
        for index, entry in enumerate(self.runtime.config.strategies):
            if entry.name == name:
                created = self.runtime.plugins.create(
                    "strategy", entry, f"cdp.toml: strategies[{index}]"
                )
                break
        else:
            created = self.runtime.plugins.create(
                "strategy",
                ComponentEntry(name=name, type=name),
                "cdp.toml: decisions.default_strategy",
            )
        assert isinstance(created, DecisionStrategy)
        return created


def _free(name: str) -> bool:
    """The eligibility query's parameters set for each decision."""
    return name == "profile" or name.startswith(("since_", "iso_"))


def _prereqs(offers: Sequence[OfferSpec]) -> set[str]:
    return {needed for o in offers for needed, _ in o.prerequisites}
