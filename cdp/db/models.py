"""The tables. Every change here comes with an alembic revision in migrations/versions/."""

from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit constraint names, so that migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER
Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, as text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # On SQLite, one conversion instead of ours plus the dialect's (a hot path: every event has
    # several datetimes); the text is the format SQLAlchemy's SQLite DATETIME writes and reads.
    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime: pass an aware one")
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            # Cutting off the "+00:00" costs less than replace(tzinfo=None).
            return value.isoformat(" ", "microseconds")[:26]

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            if len(value) > 10:  # a date and a time, as written above
                # Parsing an appended offset costs ~5x less than replace(tzinfo=UTC).
                with suppress(ValueError):
                    return datetime.fromisoformat(value + "+00:00")
            return datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


def utcnow() -> datetime:
    return datetime.now(UTC)


_last_id = 0
_id_lock = threading.Lock()


def new_id() -> str:
    """A UUIDv7 string: unique, ordered by creation time (and strictly increasing within a
    process), so keyset pagination by id follows creation order."""
    global _last_id
    # 48 bits of milliseconds, then 74 random bits; bumped by one when the clock has not moved.
    candidate = (time.time_ns() // 1_000_000) << 74 | int.from_bytes(os.urandom(10), "big") >> 6
    with _id_lock:
        candidate = max(candidate, _last_id + 1)
        _last_id = candidate
    ms, rand_a, rand_b = candidate >> 74, (candidate >> 62) & 0xFFF, candidate & (2**62 - 1)
    return str(uuid.UUID(int=ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Profile(Base):
    __tablename__ = "profiles"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    merged_into: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("profiles.id"), index=True
    )
    """Set when this profile was merged away: its id keeps resolving to the survivor."""
    traits: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    trait_sources: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    """Per trait: {"source", "event_id", "at"}: where its current value came from."""
    computed_traits: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")
    """Per computed trait key: its current value (see cdp.segments.computed)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Identifier(Base):
    __tablename__ = "identifiers"
    __table_args__ = (UniqueConstraint("type", "value"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(512))
    profile_id: Mapped[str] = mapped_column(String(36), ForeignKey("profiles.id"), index=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdentityEdge(Base):
    """Two identifiers seen together, and why we believe it."""

    __tablename__ = "identity_edges"
    __table_args__ = (Index(None, "a_id"), Index(None, "b_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    a_id: Mapped[int] = mapped_column(BigId, ForeignKey("identifiers.id"))
    b_id: Mapped[int] = mapped_column(BigId, ForeignKey("identifiers.id"))
    source: Mapped[str] = mapped_column(String(255))
    """What linked them: "event", "connector:crm", "manual", "model:v3" …"""
    event_id: Mapped[int | None] = mapped_column(BigId)
    rule: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_by: Mapped[str | None] = mapped_column(String(255))


class Merge(Base):
    """A merge of one profile into another, or a split of one out of another: who, when, why."""

    __tablename__ = "merges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8), default="merge", server_default="merge")
    """"merge": merged_id was merged into survivor_id; "split": merged_id was split out of it."""
    survivor_id: Mapped[str] = mapped_column(String(36), ForeignKey("profiles.id"), index=True)
    merged_id: Mapped[str] = mapped_column(String(36), ForeignKey("profiles.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """A collected message, stored before it is acknowledged."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "message_id"),
        Index(None, "profile_id", "timestamp"),
        Index(None, "processed_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(255))
    profile_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(512))
    anonymous_id: Mapped[str | None] = mapped_column(String(512))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    original_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """None until identity resolution has applied the event to a profile."""
    error: Mapped[str | None] = mapped_column(Text)
    """Why identity resolution could not apply the event (it is then processed, unattached)."""
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    """The whole message as received, unknown fields included."""


class ProfileGroup(Base):
    """A group (account, company) the person belongs to, from `group` calls; never used to match."""

    __tablename__ = "profile_groups"

    profile_id: Mapped[str] = mapped_column(String(36), ForeignKey("profiles.id"), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    traits: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Consent(Base):
    __tablename__ = "consents"

    profile_id: Mapped[str] = mapped_column(String(36), ForeignKey("profiles.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True, default="*")
    status: Mapped[str] = mapped_column(String(16))
    """granted, denied or revoked."""
    source: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    """The key's first characters, shown in listings so an admin can tell keys apart."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(255))
    """Space-separated."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SourceState(Base):
    """A source connector's progress: the committed checkpoint, the last run, and the claim that
    keeps two syncs of one source from running at once."""

    __tablename__ = "source_states"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    """The connector's checkpoint, committed with the events it covers; None: from the start."""
    status: Mapped[str] = mapped_column(String(16), default="idle")
    """idle, running, completed or failed."""
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_imported: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_duplicate: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_merged: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    """Counters of the last (or current) run."""
    running_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set while a sync holds the source; None when no sync does."""
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    """"host:pid" of the sync holding the source, to tell a live holder from a killed one."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Updated with every committed batch; a claim without a recent one is stale."""


class SourceReject(Base):
    """A source record that could not be imported, kept with why, for the admin to fix."""

    __tablename__ = "source_rejects"
    __table_args__ = (Index(None, "source", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(255))
    run_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    location: Mapped[str | None] = mapped_column(String(1024))
    """Where in the source, e.g. the file's path."""
    row_number: Mapped[int | None] = mapped_column(BigInteger)
    raw: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Segment(Base):
    """A named audience: a condition tree (cdp.segments.conditions) over profiles."""

    __tablename__ = "segments"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    definition: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When membership was last recomputed in bulk."""


class SegmentMembership(Base):
    """A profile's membership of a segment: a member while `left_at` is None."""

    __tablename__ = "segment_memberships"
    __table_args__ = (Index(None, "profile_id"),)

    segment_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ComputedTrait(Base):
    """An aggregate over each profile's event history, kept on `Profile.computed_traits`."""

    __tablename__ = "computed_traits"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Score(Base):
    """A model's score or label on a profile (written by enrichers; read by conditions)."""

    __tablename__ = "scores"

    profile_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(64))
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Offer(Base):
    """An offer an admin saved through GraphQL, for the content provider named `provider`."""

    __tablename__ = "offers"

    provider: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Decision(Base):
    """A logged decision: the context, the ranked offers with their factors, and every offer
    filtered out with the rule that removed it. The log is the explanation and the data for
    learning and evaluation."""

    __tablename__ = "decisions"
    __table_args__ = (Index(None, "profile_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    profile_id: Mapped[str] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(64))
    placement: Mapped[str | None] = mapped_column(String(128))
    strategy: Mapped[str] = mapped_column(String(128))
    strategy_version: Mapped[str] = mapped_column(String(64))
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    context: Mapped[dict[str, Any]] = mapped_column(Json)
    offers: Mapped[list[Any]] = mapped_column(Json)
    """The chosen offers, best first: id, rank, score, probability, factors."""
    filtered: Mapped[list[Any]] = mapped_column(Json)
    """[{"offer", "rule", "detail"}] for every candidate that was removed, and why."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Presentation(Base):
    """One offer given to one profile by a decision: what caps and budgets count."""

    __tablename__ = "presentations"
    __table_args__ = (
        Index(None, "profile_id", "created_at"),
        Index(None, "offer_id", "created_at"),
        Index(None, "decision_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(String(36))
    offer_id: Mapped[str] = mapped_column(String(255))
    profile_id: Mapped[str] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Response(Base):
    """What a person did with an offer of a decision: impression, click, accept, conversion,
    dismiss, reject (or unsubscribe)."""

    __tablename__ = "responses"
    __table_args__ = (
        Index(None, "profile_id", "created_at"),
        Index(None, "offer_id", "channel", "outcome"),
        Index(None, "decision_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(String(36))
    offer_id: Mapped[str] = mapped_column(String(255))
    profile_id: Mapped[str] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    """One trained version of a `[[models]]` entry: its artefact, evaluation and provenance."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    """The `[[models]]` entry's name."""
    version: Mapped[int] = mapped_column(Integer)
    """1, 2, … per model."""
    type: Mapped[str] = mapped_column(String(128))
    """The enricher's component name."""
    task: Mapped[str] = mapped_column(String(16))
    """classification, regression or clustering."""
    outputs: Mapped[list[Any]] = mapped_column(Json)
    """[{"name", "kind"}]: the scores and labels it writes."""
    features: Mapped[list[Any]] = mapped_column(Json)
    """The feature names, in the artefact's column order."""
    options: Mapped[dict[str, Any]] = mapped_column(Json)
    metrics: Mapped[dict[str, Any]] = mapped_column(Json)
    """The held-out evaluation and the training data's sizes and balance."""
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    """Features were built from events before it; labels from the window after it."""
    feature_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    label_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_version: Mapped[str] = mapped_column(String(255))
    artefact: Mapped[bytes] = mapped_column(LargeBinary)
    artefact_format: Mapped[str] = mapped_column(String(16))
    artefact_sha256: Mapped[str] = mapped_column(String(64))
    """Checked before the artefact is loaded: a changed artefact is refused."""
    trained_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    training_seconds: Mapped[float] = mapped_column(Float)


class ModelState(Base):
    """A model's active version and its last batch scoring."""

    __tablename__ = "model_states"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    active_version: Mapped[int | None] = mapped_column(Integer)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the last batch scoring of every profile finished."""
    scored_version: Mapped[int | None] = mapped_column(Integer)
    scored_profiles: Mapped[int | None] = mapped_column(BigInteger)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the scheduled train-and-score job last started (set by compare-and-set, so one
    process runs each due job)."""
