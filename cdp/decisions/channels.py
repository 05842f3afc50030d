"""`decideChannel`: the outbound channel to reach a profile with an offer.

Among the channels in `[decisions.channels]`, those the profile can be reached on (it has an
identifier of the channel's `reach` type), has consented to (`[decisions] consent`) and whose
budget for the period is not spent; ranked by expected value: the profile's smoothed past
response rate on the channel times the offer's value, less the channel's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from cdp import profiles
from cdp.db.models import Consent, Identifier, Presentation, Profile, Response, utcnow
from cdp.decisions.pipeline import Decider
from cdp.decisions.policy import SUCCESS
from cdp.errors import NotFoundError, UserError
from cdp.segments.conditions import parse_duration

PRIOR_SHOWN, PRIOR_SUCCESS = 10, 1
"""A new profile counts as 1 success in 10 on every channel, until its own responses say more."""


@dataclass(frozen=True)
class ChannelChoice:
    channel: str | None
    """None: no channel qualifies (see `options` for why)."""
    options: list[dict[str, Any]]


def decide_channel(decider: Decider, profile_id: str, offer_id: str) -> ChannelChoice:
    runtime, config = decider.runtime, decider.config
    if not config.channels:
        raise UserError("no channels are configured under [decisions.channels]")
    now = utcnow()
    with runtime.sessions() as session:
        profile = profiles.get_profile(session, profile_id)
        if profile is None:
            raise NotFoundError(f"profileId: no profile has the id {profile_id!r}")
        offer = next(
            (o for o in decider.offers.offers(session, runtime, now) if o.id == offer_id), None
        )
        if offer is None:
            raise NotFoundError(f"offerId: no offer has the id {offer_id!r}")
        ids = [
            profile.id,
            *session.scalars(select(Profile.id).where(Profile.merged_into == profile.id)),
        ]
        reach = set(
            session.scalars(select(Identifier.type).where(Identifier.profile_id == profile.id))
        )
        consents = {
            (purpose, channel): status
            for purpose, channel, status in session.execute(
                select(Consent.purpose, Consent.channel, Consent.status).where(
                    Consent.profile_id == profile.id
                )
            )
        }
        shown = dict(
            session.execute(
                select(Presentation.channel, func.count())
                .where(Presentation.profile_id.in_(ids))
                .group_by(Presentation.channel)
            ).all()
        )
        succeeded = dict(
            session.execute(
                select(Response.channel, func.count(func.distinct(Response.decision_id)))
                .where(Response.profile_id.in_(ids), Response.outcome.in_(SUCCESS))
                .group_by(Response.channel)
            ).all()
        )
        options = []
        for name, channel in config.channels.items():
            option: dict[str, Any] = {"channel": name, "cost": channel.cost}
            purpose = config.consent.get(name)
            status = (
                consents.get((purpose, name), consents.get((purpose, "*")))
                if purpose
                else "granted"
            )
            rate = (succeeded.get(name, 0) + PRIOR_SUCCESS) / (shown.get(name, 0) + PRIOR_SHOWN)
            option["responsiveness"] = round(rate, 4)
            option["expected_value"] = round(rate * offer.value - channel.cost, 4)
            if name not in offer.channels and "*" not in offer.channels:
                option["excluded"] = f"the offer has no content for {name}"
            elif channel.reach is not None and channel.reach not in reach:
                option["excluded"] = f"no {channel.reach} identifier"
            elif status != "granted":
                option["excluded"] = f"consent {purpose} is {status or 'not given'}"
            elif (
                channel.budget is not None
                and _spent(session, name, now, channel.budget_within) >= channel.budget
            ):
                option["excluded"] = f"budget of {channel.budget} per {channel.budget_within} spent"
            options.append(option)
    eligible = [o for o in options if "excluded" not in o]
    best = max(eligible, key=lambda o: (o["expected_value"], -o["cost"]), default=None)
    return ChannelChoice(best["channel"] if best else None, options)


def _spent(session: Any, channel: str, now: datetime, within: str) -> int:
    since = now - parse_duration(within, "budget_within")
    return (
        session.scalar(
            select(func.count()).where(
                Presentation.channel == channel, Presentation.created_at >= since
            )
        )
        or 0
    )
