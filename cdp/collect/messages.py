"""Segment-spec collection messages: raw request bodies in, validated `Message`s or errors out.

Pure (no database, no HTTP). Every error names the message's index in the batch and the field,
and one bad message in a batch never sinks the others.

This runs once per ingested event, so: checks are hand-written on plain dicts, and a batch body is
decoded item by item, keeping each message's own JSON text. The exact checks (size as compact
re-serialised JSON, depth, contents) re-serialise a message only when its text says they could
fail, which for ordinary events is never.

Refused beyond the Segment spec, because the store cannot hold them or a later
`json.dumps(...).encode()` would fail: NaN/Infinity and numbers that overflow to infinity (these
refuse the whole body, as decoding stops at them), unpaired UTF-16 surrogates and NUL characters
(PostgreSQL refuses NUL in text and jsonb), and nesting deeper than MAX_DEPTH. Unknown fields are
kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdp.collect.decoding import _decode, _decode_batch, _text
from cdp.collect.errors import FieldError, MessageError, _body_error, _Errors
from cdp.collect.hygiene import _check_json, _json_type, _segment, _Source
from cdp.collect.limits import (
    _NOT_HASHED,
    _OBJECT_FIELDS,
    MAX_BATCH_BYTES,
    MAX_DEPTH,
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_NAME_CHARS,
    MESSAGE_TYPES,
)
from cdp.collect.timestamps import _as_utc, _times, _timestamp

# The public surface of collection parsing; the other cdp.collect modules are its parts.
__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_TYPES",
    "FieldError",
    "Message",
    "MessageError",
    "derive_message_id",
    "parse_batch",
    "parse_message",
    "parse_single",
]


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    event: str | None
    """track: the event name; page/screen: the name (may be None); otherwise None."""
    timestamp: datetime
    """When it happened, corrected for the client's clock skew; tz-aware UTC."""
    original_timestamp: datetime | None
    """The client's own `timestamp` (or `originalTimestamp`), uncorrected."""
    sent_at: datetime | None
    received_at: datetime
    traits: dict[str, Any]
    """identify/group: `traits`; other types: `context.traits` if present; else {}."""
    properties: dict[str, Any]
    context: dict[str, Any]
    """The message's context over the batch's context (message keys win)."""
    group_id: str | None
    previous_id: str | None
    consent: dict[str, bool]
    """`context.consent.categoryPreferences`, else {}."""
    raw: dict[str, Any]
    """The message as received (unknown fields kept, `writeKey` dropped), `messageId` filled in."""


# --- bodies ---------------------------------------------------------------------------------


def parse_single(body: bytes, type_: str, received_at: datetime) -> Message:
    """Parse the body of `POST /v1/<type_>`; raises MessageError."""
    if type_ not in MESSAGE_TYPES:
        raise ValueError(f"unknown message type {type_!r}")
    received_at = _as_utc(received_at)
    text = _text(body, MAX_MESSAGE_BYTES)
    data = _decode(text)
    if not isinstance(data, dict):
        raise _body_error(f"must be a JSON object, not {_json_type(data)}")
    if _Source(text, [(0, len(text))]).vetted(data, 0):
        return _validate(data, type_, received_at, _Errors(None), None, None)
    return parse_message(data, type_, received_at, None)


def parse_batch(body: bytes, received_at: datetime) -> tuple[list[Message], list[FieldError]]:
    """Parse the body of `POST /v1/batch` into the valid messages and the others' errors.

    Raises MessageError only when the envelope is bad: size, encoding, JSON, `batch`, or the
    batch-level `sentAt` / `context`. `writeKey` and other envelope fields are ignored here.
    """
    received_at = _as_utc(received_at)
    text = _text(body, MAX_BATCH_BYTES)
    data, spans = _decode_batch(text)
    if not isinstance(data, dict):
        raise _body_error(f"must be a JSON object, not {_json_type(data)}")
    batch = data.get("batch")
    if batch is None:
        raise _body_error("is required", "batch")
    if not isinstance(batch, list):
        raise _body_error(f"must be an array, not {_json_type(batch)}", "batch")
    if not batch:
        raise _body_error("must not be empty", "batch")
    sent_at, context = _envelope(data)

    source = _Source(text, spans)
    messages: list[Message] = []
    errors: list[FieldError] = []
    for index, item in enumerate(batch):
        try:
            if source.vetted(item, index):
                message = _validate(item, None, received_at, _Errors(index), sent_at, context)
            else:
                message = parse_message(item, None, received_at, index, sent_at, context)
        except MessageError as exc:
            errors.extend(exc.errors)
        else:
            messages.append(message)
    return messages, errors


def _envelope(data: dict[str, Any]) -> tuple[datetime | None, dict[str, Any] | None]:
    """The batch-level `sentAt` and `context`, which apply to every message."""
    errors = _Errors(None)
    sent_at = _timestamp(data, "sentAt", errors)
    context = data.get("context")
    if context is not None and not isinstance(context, dict):
        errors.add("context", f"must be an object, not {_json_type(context)}")
        context = None
    if context:
        # It is merged into every message, so it must fit in one, one level down.
        _check_json(context, errors, "context", level=2)
    if errors.items:
        raise MessageError(errors.items)
    return sent_at, context


# --- one message ----------------------------------------------------------------------------


def parse_message(
    obj: Any,
    type_: str | None,
    received_at: datetime,
    index: int | None,
    batch_sent_at: datetime | None = None,
    batch_context: dict[str, Any] | None = None,
) -> Message:
    """Validate one decoded message; raises MessageError listing every fault found.

    `type_` None means the message's own `type` decides (batch); otherwise the endpoint decides
    and a different `type` in the message is an error.
    """
    received_at = _as_utc(received_at)
    errors = _Errors(index)
    if not isinstance(obj, dict):
        errors.add("(message)", f"must be an object, not {_json_type(obj)}")
        raise MessageError(errors.items)
    _check_json(obj, errors, "")
    if errors.items:
        raise MessageError(errors.items)  # field checks on such a message add only noise
    return _validate(obj, type_, received_at, errors, batch_sent_at, batch_context)


def _validate(
    obj: dict[str, Any],
    type_: str | None,
    received_at: datetime,
    errors: _Errors,
    batch_sent_at: datetime | None,
    batch_context: dict[str, Any] | None,
) -> Message:
    """The field checks, on a message whose JSON is known to be sound."""
    kind = _message_type(obj, type_, errors)
    for key in _OBJECT_FIELDS:
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            errors.add(key, f"must be an object, not {_json_type(value)}")
    context = _context(obj, batch_context)
    user_id, anonymous_id = _identities(obj, kind, errors)
    event = _event(obj, kind, errors)
    group_id = _required_id(obj, "groupId", errors) if kind == "group" else None
    previous_id = _required_id(obj, "previousId", errors) if kind == "alias" else None
    times = _times(obj, batch_sent_at, received_at, errors)
    consent = _consent(context, errors)
    traits = _traits(obj, kind, context, errors)
    message_id = _message_id(obj, errors)
    if errors.items or kind is None or times is None:
        raise MessageError(errors.items)

    raw = dict(obj)
    raw.pop("writeKey", None)  # a credential (analytics.js puts it in every message): not stored
    raw["messageId"] = message_id or derive_message_id(obj, kind, received_at)
    properties = obj.get("properties") if kind in ("track", "page", "screen") else None
    return Message(
        type=kind,
        message_id=raw["messageId"],
        user_id=user_id,
        anonymous_id=anonymous_id,
        event=event,
        timestamp=times[0],
        original_timestamp=times[1],
        sent_at=times[2],
        received_at=received_at,
        traits=traits,
        properties=properties or {},
        context=context,
        group_id=group_id,
        previous_id=previous_id,
        consent=consent,
        raw=raw,
    )


def derive_message_id(obj: dict[str, Any], type_: str, received_at: datetime) -> str:
    """A deterministic id for a message sent without one, so that a replay is still a duplicate.

    `sentAt` and `writeKey` are left out: clients reset the one on every retry, and keys rotate.
    A message with no client timestamp has nothing that tells a replay from a new event with the
    same content (a heartbeat); it is dated `received_at`, which is then hashed too, so that
    both are kept.
    """
    content = {k: v for k, v in obj.items() if k not in _NOT_HASHED}
    basis: dict[str, Any] = {"type": type_, "message": content}
    if obj.get("timestamp") is None and obj.get("originalTimestamp") is None:
        basis["receivedAt"] = received_at.isoformat()
    canonical = json.dumps(basis, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _message_type(obj: dict[str, Any], type_: str | None, errors: _Errors) -> str | None:
    declared = obj.get("type")
    if type_ is not None:
        if declared is not None and declared != type_:
            errors.add("type", f'must be "{type_}" on this endpoint, or left out')
        return type_
    if declared is None:
        errors.add("type", "is required")
        return None
    if declared not in MESSAGE_TYPES:
        errors.add("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
        return None
    return str(declared)


def _context(obj: dict[str, Any], batch_context: dict[str, Any] | None) -> dict[str, Any]:
    own = obj.get("context")
    own = own if isinstance(own, dict) else {}
    if batch_context:
        return {**batch_context, **own}
    return own


def _identities(
    obj: dict[str, Any], kind: str | None, errors: _Errors
) -> tuple[str | None, str | None]:
    before = len(errors.items)
    user_id = _identifier(obj, "userId", errors)
    anonymous_id = _identifier(obj, "anonymousId", errors)
    if len(errors.items) > before:
        return user_id, anonymous_id
    if kind == "alias":
        if user_id is None:
            errors.add("userId", "is required")
    elif user_id is None and anonymous_id is None:
        errors.add("userId", "either userId or anonymousId is required")
    return user_id, anonymous_id


def _required_id(obj: dict[str, Any], key: str, errors: _Errors) -> str | None:
    before = len(errors.items)
    value = _identifier(obj, key, errors)
    if value is None and len(errors.items) == before:
        errors.add(key, "is required")
    return value


def _identifier(obj: dict[str, Any], key: str, errors: _Errors) -> str | None:
    """A string id; integers are accepted as Segment's libraries accept them. Blank is absent."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is int:  # not bool, which is an int subclass
        value = str(value)
    elif not isinstance(value, str):
        errors.add(key, f"must be a string, not {_json_type(value)}")
        return None
    if not value or value.isspace():
        return None
    if len(value) > MAX_ID_CHARS:
        errors.add(key, f"must be at most {MAX_ID_CHARS} characters")
        return None
    return value


def _event(obj: dict[str, Any], kind: str | None, errors: _Errors) -> str | None:
    if kind == "track":
        before = len(errors.items)
        event = _name(obj, "event", errors)
        if event is None and len(errors.items) == before:
            errors.add("event", "is required")
        return event
    if kind in ("page", "screen"):
        return _name(obj, "name", errors)
    return None


def _name(obj: dict[str, Any], key: str, errors: _Errors) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(key, f"must be a string, not {_json_type(value)}")
        return None
    if not value or value.isspace():
        return None
    if len(value) > MAX_NAME_CHARS:
        errors.add(key, f"must be at most {MAX_NAME_CHARS} characters")
        return None
    return value


def _message_id(obj: dict[str, Any], errors: _Errors) -> str | None:
    """The client's messageId; None when it sent none (or a blank one) and one is derived."""
    value = obj.get("messageId")
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add("messageId", f"must be a string, not {_json_type(value)}")
        return None
    if not value or value.isspace():
        return None
    if len(value) > MAX_NAME_CHARS:
        errors.add("messageId", f"must be at most {MAX_NAME_CHARS} characters")
        return None
    return value


def _traits(
    obj: dict[str, Any], kind: str | None, context: dict[str, Any], errors: _Errors
) -> dict[str, Any]:
    in_context = context.get("traits")
    if in_context is not None and not isinstance(in_context, dict):
        errors.add("context.traits", f"must be an object, not {_json_type(in_context)}")
        in_context = None
    own = obj.get("traits") if kind in ("identify", "group") else in_context
    return own if isinstance(own, dict) else {}


def _consent(context: dict[str, Any], errors: _Errors) -> dict[str, bool]:
    consent = context.get("consent")
    if consent is None:
        return {}
    if not isinstance(consent, dict):
        errors.add("context.consent", f"must be an object, not {_json_type(consent)}")
        return {}
    prefs = consent.get("categoryPreferences")
    if prefs is None:
        return {}
    field = "context.consent.categoryPreferences"
    if not isinstance(prefs, dict):
        errors.add(field, f"must be an object, not {_json_type(prefs)}")
        return {}
    before = len(errors.items)
    for category, granted in prefs.items():
        if type(granted) is not bool:
            errors.add(
                f"{field}.{_segment(category)}", f"must be a boolean, not {_json_type(granted)}"
            )
    return dict(prefs) if len(errors.items) == before else {}
