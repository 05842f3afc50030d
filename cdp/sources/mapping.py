"""A source record and its source's mapping in, a Segment message (a dict for
`parse_message`) out: `identify` for profile records, `track` for event records.

Identifiers go where identity resolution reads them: `user_id` and `anonymous_id` to `userId` and
`anonymousId`, every other type to the traits (`traits` of an identify, `context.traits` of a
track) under the type's name. Segment needs a userId or an anonymousId; a record with neither gets
an anonymousId derived from its source and first identifier, so that every row of one person in a
source carries the same one. Empty fields count as absent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cdp.errors import UserError
from cdp.sources.spec import SourceSpec

GRANTED = frozenset({"yes", "y", "true", "t", "1", "on", "granted"})
DENIED = frozenset({"no", "n", "false", "f", "0", "off", "denied"})
MAX_MESSAGE_ID = 255


class MappingError(UserError):
    """A record the mapping cannot turn into a message; the message says which key and why."""


def record_message(spec: SourceSpec, record: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The Segment message for `record`; `key` identifies the record within the source (the
    messageId is derived from it unless the mapping names a message_id field)."""
    mapping = spec.mapping
    identifiers = _identifiers(spec, record)
    user_id = identifiers.pop("user_id", None)
    anonymous_id = identifiers.pop("anonymous_id", None)
    if user_id is None and anonymous_id is None:
        anonymous_id = derived_anonymous_id(spec.name, *next(iter(identifiers.items())))
    traits = _fields(record, mapping.traits)
    traits.update(identifiers)

    message: dict[str, Any] = {"messageId": message_id(spec, record, key)}
    if user_id is not None:
        message["userId"] = user_id
    if anonymous_id is not None:
        message["anonymousId"] = anonymous_id
    timestamp = _timestamp(spec, record)
    if timestamp is not None:
        message["timestamp"] = timestamp
    context: dict[str, Any] = {}
    consents = _consents(spec, record)
    if consents:
        context["consent"] = {"categoryPreferences": consents}
    if spec.kind == "profiles":
        message.update(type="identify", traits=traits)
    else:
        message.update(
            type="track",
            event=_event_name(spec, record),
            properties=_fields(record, mapping.properties),
        )
        if traits:
            context["traits"] = traits
    if context:
        message["context"] = context
    return message


def message_id(spec: SourceSpec, record: Mapping[str, Any], key: str) -> str:
    """`source:key`, from the mapping's message_id field when it names one; hashed when long."""
    if spec.mapping.message_id is not None:
        value = _text(field(record, spec.mapping.message_id))
        if value is None:
            raise MappingError(f"mapping.message_id: field {spec.mapping.message_id!r} is empty")
        key = value
    text = f"{spec.name}:{key}"
    if len(text) <= MAX_MESSAGE_ID:
        return text
    return f"{spec.name[:150]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def derived_anonymous_id(source: str, type_name: str, value: str) -> str:
    digest = hashlib.sha256(f"{source}\0{type_name}\0{value}".encode()).hexdigest()[:32]
    return f"{source}:{digest}"


def field(record: Mapping[str, Any], name: str) -> Any:
    """The field's value; a dotted name reaches into nested objects (JSON records) when the
    record has no field of that exact name."""
    if name in record:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _identifiers(spec: SourceSpec, record: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for type_name, name in spec.mapping.identifiers.items():
        value = field(record, name)
        if type(value) is int:
            value = str(value)
        elif value is not None and not isinstance(value, str):
            raise MappingError(
                f"mapping.identifiers.{type_name}: field {name!r} holds "
                f"{type(value).__name__}, not text"
            )
        text = _text(value)
        if text is not None:
            found[type_name] = text
    if not found:
        fields = ", ".join(repr(name) for name in spec.mapping.identifiers.values())
        raise MappingError(f"mapping.identifiers: every identifier field is empty ({fields})")
    return found


def _fields(record: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for target, name in names.items():
        value = field(record, name)
        if _text(value) is not None:
            found[target] = value
    return found


def _consents(spec: SourceSpec, record: Mapping[str, Any]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for purpose, name in spec.mapping.consents.items():
        value = field(record, name)
        if isinstance(value, bool):
            found[purpose] = value
            continue
        text = _text(value if value is None else str(value))
        if text is None:
            continue
        if text.lower() in GRANTED:
            found[purpose] = True
        elif text.lower() in DENIED:
            found[purpose] = False
        else:
            raise MappingError(
                f"mapping.consents.{purpose}: {text[:50]!r} in field {name!r} is neither "
                "granted (yes, true, 1, on, granted) nor denied (no, false, 0, off, denied)"
            )
    return found


def _timestamp(spec: SourceSpec, record: Mapping[str, Any]) -> str | None:
    name = spec.mapping.timestamp
    if name is None:
        return None
    value = field(record, name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            raise MappingError(
                f"mapping.timestamp: {value!r} in field {name!r} is out of range"
            ) from None
    text = _text(value if value is None else str(value))
    if text is None and spec.kind == "events":
        raise MappingError(f"mapping.timestamp: field {name!r} is empty")
    return text


def _event_name(spec: SourceSpec, record: Mapping[str, Any]) -> str:
    if spec.mapping.event is not None:
        return spec.mapping.event
    name = spec.mapping.event_field
    assert name is not None  # the spec requires event or event_field for events
    value = field(record, name)
    text = _text(value if value is None else str(value))
    if text is None:
        raise MappingError(f"mapping.event_field: field {name!r} is empty")
    return text


def _text(value: Any) -> str | None:
    """A string value stripped; None for a missing or blank one."""
    if value is None:
        return None
    if not isinstance(value, str):
        return str(value)
    stripped = value.strip()
    return stripped or None
