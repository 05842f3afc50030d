"""What a decision reads of the person and what it writes: the profile as strategies and
templates see it, the per-profile lock, and the decision log with its presentations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cdp.db.bulk import insert_rows
from cdp.db.models import Decision, Presentation, Profile, Score, SegmentMembership

if TYPE_CHECKING:
    from cdp.decisions.pipeline import Decided, DecisionContext

PROFILE_LOCK = 0x43445044  # pg_advisory_xact_lock(class, hash): "CDPD", apart from identity's


def lock_profile(session: Session, profile_id: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:c, hashtext(:p))"),
            {"c": PROFILE_LOCK, "p": profile_id},
        )


def profile_view(session: Session, profile: Profile) -> dict[str, Any]:
    """What strategies and templates see of the person."""
    scores = {
        name: value if value is not None else label
        for name, value, label in session.execute(
            select(Score.name, Score.value, Score.label).where(Score.profile_id == profile.id)
        )
    }
    segments = list(
        session.scalars(
            select(SegmentMembership.segment_key).where(
                SegmentMembership.profile_id == profile.id, SegmentMembership.left_at.is_(None)
            )
        )
    )
    merged = list(session.scalars(select(Profile.id).where(Profile.merged_into == profile.id)))
    return {
        "id": profile.id,
        "traits": dict(profile.traits or {}),
        "computed_traits": dict(profile.computed_traits or {}),
        "scores": scores,
        "segments": segments,
        "merged_ids": [profile.id, *merged],
    }


def log_decision(session: Session, decided: Decided, context: DecisionContext) -> None:
    session.add(
        Decision(
            id=decided.id,
            profile_id=decided.profile_id,
            channel=decided.channel,
            placement=decided.placement,
            strategy=decided.strategy,
            strategy_version=decided.strategy_version,
            holdout=decided.holdout,
            context={
                "channel": context.channel,
                "placement": context.placement,
                "limit": context.limit,
                "time": decided.created_at.isoformat(),
                "attributes": dict(context.attributes),
            },
            offers=[
                {
                    "offer": c.offer.id,
                    "rank": c.rank,
                    "score": c.score,
                    "probability": c.probability,
                    "factors": dict(c.factors),
                }
                for c in decided.offers
            ],
            filtered=decided.filtered,
            created_at=decided.created_at,
        )
    )
    session.flush()
    if decided.offers:
        insert_rows(
            session.connection(),
            Presentation.__table__,
            ("decision_id", "offer_id", "profile_id", "channel", "rank", "created_at"),
            [
                (d.id, c.offer.id, d.profile_id, d.channel, c.rank, d.created_at)
                for d in [decided]
                for c in d.offers
            ],
        )
