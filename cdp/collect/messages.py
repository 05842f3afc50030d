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
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cdp.errors import UserError

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_DEPTH = 32
"""Levels of nesting a message may have, counting the message object itself."""
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

MAX_ID_CHARS = 512
"""userId, anonymousId, groupId, previousId."""
MAX_NAME_CHARS = 255
"""messageId, track event names, page/screen names."""
MAX_FUTURE = timedelta(hours=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP_CHARS = 64
"""Longer than any ISO-8601 date-time; bounds the work spent on a hostile string."""
MAX_SEGMENT_CHARS = 64
"""Longest key shown in an error's field path."""

_SAFE_SOURCE_BYTES = MAX_MESSAGE_BYTES // 5
"""A message whose JSON text is no longer cannot re-serialise past MAX_MESSAGE_BYTES: strings and
integers never grow, and a float at most 4.5-fold (`1e15` becomes `1000000000000000.0`)."""
_SUSPECT_ESCAPES = ("\\u0000", "\\ud", "\\uD")
"""Only these escapes can put a NUL or an unpaired surrogate in decoded text."""
_TOO_DEEP = f"nests deeper than {MAX_DEPTH} levels"
_OBJECT_FIELDS = ("traits", "properties", "context", "integrations")
_NOT_HASHED = ("sentAt", "messageId", "writeKey", "type")
"""Left out of a derived messageId; the type is hashed as the endpoint or batch decided it."""


@dataclass(frozen=True)
class FieldError:
    index: int | None
    """Position in the batch; None for a single-message endpoint or the body itself."""
    field: str
    """Dotted path, e.g. `context.consent.categoryPreferences.ads`; `(body)` or `(message)`."""
    message: str

    def __str__(self) -> str:
        if self.index is None:
            return f"{self.field}: {self.message}"
        if self.field == "(message)":
            return f"batch[{self.index}]: {self.message}"
        return f"batch[{self.index}].{self.field}: {self.message}"


class MessageError(UserError):
    """One message, or a whole body, is invalid; `.errors` says where and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


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


class _Errors:
    """Collects one message's errors so that all of them are reported at once."""

    __slots__ = ("index", "items")

    def __init__(self, index: int | None) -> None:
        self.index = index
        self.items: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.items.append(FieldError(self.index, field, message))


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


def _body_error(message: str, field: str = "(body)") -> MessageError:
    return MessageError([FieldError(None, field, message)])


# --- decoding -------------------------------------------------------------------------------


class _Refused(ValueError):
    """A number the decoder hooks refuse; its message is meant for the client."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    # A literal such as 1e400 decodes to infinity, which no JSON encoder will write back.
    value = float(literal)
    if math.isinf(value):
        raise _Refused(f"number {literal[:MAX_SEGMENT_CHARS]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _text(body: bytes, limit: int) -> str:
    if len(body) > limit:
        raise _body_error(f"is {len(body)} bytes; the limit is {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise _body_error("is not valid UTF-8") from None


def _decode(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError:
        # The decoder recurses once per level: far past MAX_DEPTH, so refused the same way.
        raise _body_error(_TOO_DEEP) from None
    except (json.JSONDecodeError, _Refused) as exc:
        raise _body_error(f"not valid JSON: {exc}") from None
    except ValueError:  # int() refuses integers longer than Python's digit limit
        limit = sys.get_int_max_str_digits()
        raise _body_error(f"not valid JSON: a number has more than {limit} digits") from None


def _decode_batch(text: str) -> tuple[Any, list[tuple[int, int]] | None]:
    """The decoded body and, when it is a plain object, where each `batch` item's text lies."""
    try:
        return _scan_object(text)
    except RecursionError:
        raise _body_error(_TOO_DEEP) from None
    except ValueError:
        # Decoding the whole text again gives json's own error message (or, were the scanner
        # wrong about valid JSON, the data, checked by the slower exact path).
        return _decode(text), None


def _scan_object(text: str) -> tuple[dict[str, Any], list[tuple[int, int]] | None]:
    """Decode a JSON object, keeping the spans of the items of its `batch` array.

    Raises ValueError on anything that is not such an object, or not valid JSON.
    """
    data: dict[str, Any] = {}
    spans: list[tuple[int, int]] | None = None
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        raise ValueError("not an object")
    i = _skip(text, i + 1)
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            key, i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if not isinstance(key, str) or text[i : i + 1] != ":":
                raise ValueError("expected a key")
            i = _skip(text, i + 1)
            if key == "batch" and text[i : i + 1] == "[":
                value, spans, i = _scan_array(text, i)
            else:
                value, i = _DECODER.raw_decode(text, i)
                spans = None if key == "batch" else spans
            data[key] = value
            i = _skip(text, i)
            char = text[i : i + 1]
            i = _skip(text, i + 1)
            if char == "}":
                break
            if char != ",":
                raise ValueError("expected , or }")
    if _skip(text, i) != len(text):
        raise ValueError("extra data")
    return data, spans


def _scan_array(text: str, i: int) -> tuple[list[Any], list[tuple[int, int]], int]:
    """Decode the array at `text[i]` with each item's span; returns the index after it."""
    items: list[Any] = []
    spans: list[tuple[int, int]] = []
    scan = _DECODER.scan_once  # raw_decode without its wrapper: this loop runs per message
    i = _skip(text, i + 1)
    if text[i : i + 1] == "]":
        return items, spans, i + 1
    while True:
        try:
            item, end = scan(text, i)
        except StopIteration:  # what the scanner raises where no value starts
            raise ValueError("expected a value") from None
        items.append(item)
        spans.append((i, end))
        i = _skip(text, end)
        char = text[i : i + 1]
        i = _skip(text, i + 1)
        if char == "]":
            return items, spans, i
        if char != ",":
            raise ValueError("expected , or ]")


def _skip(text: str, i: int) -> int:
    match = _WHITESPACE.match(text, i)
    return match.end() if match else i


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


# --- timestamps -----------------------------------------------------------------------------


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


# --- JSON hygiene ---------------------------------------------------------------------------


class _Source:
    """A body's decoded text, so that each message can be vetted on its own slice of it."""

    __slots__ = ("ascii", "spans", "suspect", "text")

    def __init__(self, text: str, spans: list[tuple[int, int]] | None) -> None:
        self.text = text
        self.spans = spans
        self.ascii = text.isascii()
        # A one-byte search first: most bodies hold no escape at all.
        self.suspect = "\\" in text and any(e in text for e in _SUSPECT_ESCAPES)

    def vetted(self, item: Any, index: int) -> bool:
        """Whether `item` is an object whose text rules out what `_check_json` looks for.

        Those checks re-serialise the message; this only looks at its text.
        """
        if self.spans is None or not isinstance(item, dict):
            return False
        start, end = self.spans[index]
        text = self.text
        size = end - start if self.ascii else len(text[start:end].encode())
        return (
            size <= _SAFE_SOURCE_BYTES
            # Depth is at most the number of containers.
            and text.count("{", start, end) + text.count("[", start, end) <= MAX_DEPTH
            and not (self.suspect and any(text.find(e, start, end) >= 0 for e in _SUSPECT_ESCAPES))
        )


def _check_json(value: Any, errors: _Errors, field: str, level: int = 1) -> None:
    """Size, depth and contents the store cannot hold, measured on the compact re-serialisation.

    `level` is where `value` sits in a message: 1 for the message itself.
    """
    whole = field or "(message)"
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        errors.add(whole, _TOO_DEEP)
        return
    except ValueError:  # NaN or infinity: only from callers whose floats were not decoded here
        errors.add(_where(value, _is_nonfinite, field), "is a number out of range")
        return
    except TypeError:  # only reachable by callers passing objects that did not come from JSON
        errors.add(whole, "holds a value that is not JSON")
        return
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            errors.add(_where(value, _has_surrogate, field), "contains an unpaired surrogate")
            return
    if size > MAX_MESSAGE_BYTES:
        errors.add(whole, f"is {size} bytes as JSON; the limit is {MAX_MESSAGE_BYTES} bytes")
    if "\\u0000" in text and (path := _find(value, _has_nul)) is not None:
        errors.add(_join(field, path) or whole, "contains a NUL character")
    # Depth is at most the number of containers, so most messages skip the walk.
    if text.count("{") + text.count("[") + level - 1 > MAX_DEPTH:
        top = _too_deep(value, level)
        if top is not None:
            errors.add(_join(field, top) or whole, _TOO_DEEP)


def _too_deep(value: Any, level: int) -> str | None:
    """The top-level key under which `value`, at `level`, nests past MAX_DEPTH, or None."""
    stack: list[tuple[Any, int, str]] = [(value, level, "")]
    while stack:
        node, depth, top = stack.pop()
        if depth > MAX_DEPTH:
            return top
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, top or _segment(key)))
    return None


def _where(value: Any, bad: Callable[[Any], bool], field: str) -> str:
    return _join(field, _find(value, bad) or "") or field or "(message)"


def _find(value: Any, bad: Callable[[Any], bool]) -> str | None:
    """The path of the first key or value for which `bad` holds, or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                sub = _join(path, _segment(key))
                if bad(key):
                    return sub
                stack.append((child, sub))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
        elif bad(node):
            return path
    return None


def _is_nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _has_surrogate(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _segment(key: Any) -> str:
    """A key as shown in an error: printable, short, safe to encode (it may be the culprit)."""
    text = str(key)
    if not text.isprintable():
        text = json.dumps(text)[1:-1]
    if len(text) > MAX_SEGMENT_CHARS:
        text = text[:MAX_SEGMENT_CHARS] + "…"
    return text


def _join(path: str, key: str) -> str:
    if not path:
        return key
    if not key:
        return path
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
