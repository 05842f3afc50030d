"""Responses: what people did with the offers of a decision, from GraphQL (`recordResponse`) or
from collected `track` events that carry the decision and offer ids.

A response feeds caps and suppressions (cdp.decisions.policy), prerequisites, and the statistics
learning strategies rank by.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.db.models import Decision, Response, utcnow
from cdp.errors import NotFoundError, UserError

log = logging.getLogger(__name__)
OUTCOMES = ("IMPRESSION", "CLICK", "ACCEPT", "CONVERSION", "DISMISS", "REJECT", "UNSUBSCRIBE")
EVENT_OUTCOMES = {
    "Offer Viewed": "IMPRESSION",
    "Offer Clicked": "CLICK",
    "Offer Accepted": "ACCEPT",
    "Offer Converted": "CONVERSION",
    "Offer Dismissed": "DISMISS",
    "Offer Rejected": "REJECT",
}
"""Track events that are responses by their name; any track event with `decision_id`,
`offer_id` and `outcome` properties is one too."""


def record_response(
    session: Session,
    decision_id: str,
    offer_id: str,
    outcome: str,
    value: float | None = None,
    source: str = "graphql",
    at: datetime | None = None,
) -> Response:
    """Record a response to an offer the decision gave; errors name the argument."""
    outcome = outcome.upper()
    if outcome not in OUTCOMES:
        raise UserError(f"outcome: one of {', '.join(OUTCOMES)}")
    if value is not None and not math.isfinite(value):
        raise UserError("value: a finite number")
    decision = session.get(Decision, decision_id)
    if decision is None:
        raise NotFoundError(f"decisionId: no decision has the id {decision_id!r}")
    given = {item["offer"] for item in decision.offers}
    if offer_id not in given:
        raise UserError(f"offerId: decision {decision_id} did not give {offer_id!r}")
    response = Response(
        decision_id=decision_id,
        offer_id=offer_id,
        profile_id=decision.profile_id,
        channel=decision.channel,
        outcome=outcome,
        value=value,
        source=source,
        created_at=at or utcnow(),
    )
    session.add(response)
    session.flush()
    return response


def from_events(session: Session, events: Iterable[Mapping[str, Any]]) -> int:
    """Record the responses carried by ingested event rows (type, payload, timestamp, source);
    an event naming an unknown decision or offer is stored as an event all the same."""
    recorded = 0
    for event in events:
        found = _response_of(event)
        if found is None:
            continue
        decision_id, offer_id, outcome, value = found
        try:
            with session.begin_nested():
                record_response(
                    session,
                    decision_id,
                    offer_id,
                    outcome,
                    value,
                    event["source"],
                    event["timestamp"],
                )
            recorded += 1
        except UserError as exc:
            log.info("event %s is not a response: %s", event.get("message_id"), exc)
        except Exception:  # never lose the events for a response that cannot be recorded
            log.exception("response of event %s not recorded", event.get("message_id"))
    return recorded


def _response_of(event: Mapping[str, Any]) -> tuple[str, str, str, float | None] | None:
    if event.get("type") != "track":
        return None
    properties = event["payload"].get("properties")
    if not isinstance(properties, dict):
        return None
    decision_id, offer_id = properties.get("decision_id"), properties.get("offer_id")
    if not isinstance(decision_id, str) or not isinstance(offer_id, str):
        return None
    outcome = properties.get("outcome") or EVENT_OUTCOMES.get(event["payload"].get("event", ""))
    if not isinstance(outcome, str):
        return None
    value = properties.get("value", properties.get("revenue"))
    value = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return decision_id, offer_id, outcome, value


def responses_of(session: Session, decision_id: str) -> list[Response]:
    return list(
        session.scalars(
            select(Response).where(Response.decision_id == decision_id).order_by(Response.id)
        )
    )
