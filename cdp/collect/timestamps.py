"""Message timestamps: ISO-8601 parsing and Segment's clock-skew correction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cdp.collect.errors import _Errors
from cdp.collect.hygiene import _json_type
from cdp.collect.limits import EARLIEST, MAX_FUTURE, MAX_TIMESTAMP_CHARS


def _times(
    obj: dict[str, Any], batch_sent_at: datetime | None, received_at: datetime, errors: _Errors
) -> tuple[datetime, datetime | None, datetime | None] | None:
    """(corrected timestamp, client timestamp, sentAt), or None after recording the error."""
    before = len(errors.items)
    client = _timestamp(obj, "timestamp", errors)
    original = _timestamp(obj, "originalTimestamp", errors)
    sent_at = _timestamp(obj, "sentAt", errors)
    if len(errors.items) > before:
        return None
    client = client or original
    sent_at = sent_at or batch_sent_at
    corrected = _correct(client, sent_at, received_at)
    if corrected is None:
        errors.add("timestamp", "is out of range after correcting for clock skew with sentAt")
    elif corrected > received_at + MAX_FUTURE:
        errors.add("timestamp", "is more than 1 hour after the time it was received (far-future)")
    elif corrected < EARLIEST:
        errors.add("timestamp", "is before 2000-01-01")
    else:
        return corrected, client, sent_at
    return None


def _correct(
    client: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime | None:
    """Segment's clock-skew correction: the client's clock is trusted for intervals only.

    timestamp = receivedAt - (sentAt - clientTimestamp); None when that is out of range.
    """
    if client is None:
        return received_at
    if sent_at is None:
        return client
    try:
        return received_at - (sent_at - client)
    except OverflowError:
        return None


def _timestamp(obj: dict[str, Any], key: str, errors: _Errors) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(key, f"must be an ISO-8601 date-time string, not {_json_type(value)}")
        return None
    parsed = _parse_iso(value)
    if parsed is None:
        errors.add(key, "is not an ISO-8601 date-time")
    return parsed


def _parse_iso(value: str) -> datetime | None:
    """An ISO-8601 string as tz-aware UTC; naive means UTC. None when it is not one."""
    if len(value) > MAX_TIMESTAMP_CHARS:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: e.g. year 1 with a positive offset
        return None


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
