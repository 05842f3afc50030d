"""Identity rules: identifier types, their normalisation, priority, limits and blocked values.

The semantics follow Segment Unify's identity resolution. Each identifier type has a priority
(1 = strongest; when a merge would break a limit, the engine drops the weakest types first), a
limit of identifiers of that type on one profile (optionally counting only those seen in the last
N days), and blocked values that are never used as identifiers.

Built-in types, and why:

==============  ========  =====  ===========  ====================================================
type            priority  limit  window       read from (Segment message)
==============  ========  =====  ===========  ====================================================
user_id         1         1      ever         ``userId``
email           2         5      ever         ``traits.email``, ``context.traits.email``,
                                              ``properties.email`` (track only)
phone           3         5      ever         ``traits.phone``, ``context.traits.phone``
device_id       4         10     ever         ``context.device.id``
advertising_id  4         10     ever         ``context.device.advertisingId``
anonymous_id    5         50     30 days      ``anonymousId``
group_id        10        -      -            ``groupId`` (shared: recorded, never merged on)
==============  ========  =====  ===========  ====================================================

- ``user_id`` is the customer's own key: a person has exactly one, so two different user ids on
  one profile mean two people, and the limit of 1 keeps them apart.
- E-mail and phone identify a person well but people own several and change them; 5 allows that
  while stopping a shared inbox or a call-centre number from pulling a crowd into one profile.
- Device and advertising ids are per device; 10 covers a household's worth of hardware.
- Anonymous ids are cookies: numerous, short-lived and sometimes shared (kiosks, shared
  browsers). 50 in 30 days lets a real person accumulate them while a cookie shared by many
  people soon hits the limit and stops merging them.
- ``group_id`` names an account or company, i.e. many people, so it is never used to match.

``traits.*`` is not read from ``group`` messages, because there the traits describe the group, not
the person. A user entry in ``identity.types`` replaces the built-in entry of that name wholesale;
its ``sources``, when given, replace the built-in Segment fields too. Custom types are read from
their ``sources`` as written, from every message type; a custom type without sources is only
produced by callers that pass values to ``Rules.normalise`` directly (e.g. connectors).

A value is rejected, never guessed at, when it is not a string or an integer, is empty or blocked
(the global ``identity.blocked`` list and the type's own lists), or fails its type's
normalisation. ``identity.blocked`` replaces ``DEFAULT_BLOCKED``: to extend it, repeat the
defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Annotated, Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, StringConstraints, ValidationInfo, field_validator

from cdp.errors import UserError
from cdp.settings import Section

MAX_VALUE_LENGTH = 512
"""Longest normalised value; the identifiers.value column holds 512 characters."""
MAX_RAW_LENGTH = 4096
"""Longer raw values are refused before normalising, which bounds the work (and a configured
regex's backtracking) per value."""
MAX_SHOWN_LENGTH = 100
"""A rejected raw value is reported cut to this length."""
CACHE_SIZE = 16384
MAX_CACHED_LENGTH = 256
"""Values of at most this length go through the cache, so it stays a few MB at most."""

DEFAULT_BLOCKED: tuple[str, ...] = (
    "",
    "null",
    "undefined",
    "none",
    "nil",
    "n/a",
    "na",
    "unknown",
    "0",
    "-1",
    "anonymous",
    "[object object]",
    "test@test.com",
    "test@example.com",
    "00000000-0000-0000-0000-000000000000",
    "true",
    "false",
)
"""Placeholders that SDKs and forms send in place of a real value (compared case-insensitively
after trimming); used as identifiers they would merge everyone who sent them."""


class InvalidIdentifier(UserError):
    """A value cannot be used as an identifier; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


Regex = Annotated[str, AfterValidator(_compiles)]
TypeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""Identifier type names: lower-case snake_case, up to the 64 characters the database keeps."""
SourcePath = Annotated[str, StringConstraints(pattern=r"^[^.\s]+(\.[^.\s]+)*$")]


class IdentifierType(Section):
    priority: int = Field(ge=1)
    """1 = strongest; merges drop the lowest-priority (highest number) identifiers first."""
    limit: int | None = Field(default=None, ge=1)
    """Most identifiers of this type on one profile; None = unlimited."""
    window_days: int | None = Field(default=None, ge=1)
    """The limit counts identifiers seen in the last N days; None = ever."""
    normalise: Literal["email", "phone", "none", "lower", "regex"] = "none"
    pattern: Regex | None = Field(default=None, validate_default=True)
    """For normalise = "regex": the value must fully match; the first capture group, if any, is
    the normalised value."""
    blocked: list[str] = []
    """Exact values, compared after normalisation, case-insensitively."""
    blocked_patterns: list[Regex] = []
    """Regular expressions a normalised value must not fully match (case-insensitively)."""
    sources: list[SourcePath] = []
    """Dotted paths in a Segment message to read the value from, e.g. "traits.loyalty_id"."""
    shared: bool = False
    """Identifies a group of people (e.g. group_id): recorded, never used to match or merge."""

    @field_validator("window_days")
    @classmethod
    def _window_needs_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and "limit" in info.data and info.data["limit"] is None:
            raise ValueError("window_days needs a limit to apply to")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_with_regex(cls, value: str | None, info: ValidationInfo) -> str | None:
        normalise = info.data.get("normalise")
        if normalise == "regex" and value is None:
            raise ValueError('pattern is required when normalise = "regex"')
        if normalise not in (None, "regex") and value is not None:
            raise ValueError('pattern is only used when normalise = "regex"')
        return value


BUILTIN_TYPES: Mapping[str, IdentifierType] = MappingProxyType(
    {
        "user_id": IdentifierType(priority=1, limit=1),
        "email": IdentifierType(priority=2, limit=5, normalise="email"),
        "phone": IdentifierType(priority=3, limit=5, normalise="phone"),
        "device_id": IdentifierType(priority=4, limit=10),
        "advertising_id": IdentifierType(priority=4, limit=10),
        "anonymous_id": IdentifierType(priority=5, limit=50, window_days=30),
        "group_id": IdentifierType(priority=10, shared=True),
    }
)


class IdentityConfig(Section):
    default_region: str | None = None
    """ISO country assumed for phone numbers without a +country code; None: they are invalid."""
    blocked: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED))
    """Values blocked for every type (exact, case-insensitive, after trimming)."""
    types: dict[TypeName, IdentifierType] = {}
    """Merged over BUILTIN_TYPES: an entry replaces the built-in of that name, new names add."""

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"default_region {value!r} is not a region code phonenumbers knows")
        return region

    def resolved_types(self) -> dict[str, IdentifierType]:
        return {**BUILTIN_TYPES, **self.types}


@dataclass(slots=True)
class Extracted:
    """The identifiers of one message, strongest first."""

    identifiers: list[tuple[str, str]] = field(default_factory=list)
    """(type, normalised value) of the types that match and merge profiles."""
    shared: list[tuple[str, str]] = field(default_factory=list)
    """(type, normalised value) of shared types (e.g. group_id): recorded only."""
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, raw value cut to 100 characters, reason)."""


_When = Literal["any", "not group", "track"]
"""Which message types a built-in field is read from."""
_BUILTIN_SOURCES: Mapping[str, tuple[tuple[str, _When], ...]] = {
    "user_id": (("userId", "any"),),
    "anonymous_id": (("anonymousId", "any"),),
    "email": (
        ("traits.email", "not group"),
        ("context.traits.email", "any"),
        ("properties.email", "track"),
    ),
    "phone": (("traits.phone", "not group"), ("context.traits.phone", "any")),
    "device_id": (("context.device.id", "any"),),
    "advertising_id": (("context.device.advertisingId", "any"),),
    "group_id": (("groupId", "any"),),
}
_MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

_Reader = tuple[str, tuple[str, ...], bool]
"""(type name, path keys, shared)."""
_Checked = tuple[str, None] | tuple[None, str]
"""(normalised value, None) or (None, reason)."""


def _applies(when: _When, message_type: str | None) -> bool:
    if when == "not group":
        return message_type != "group"
    if when == "track":
        return message_type == "track"
    return True


@dataclass(frozen=True, slots=True)
class _CompiledType:
    spec: IdentifierType
    blocked: frozenset[str]
    blocked_patterns: tuple[re.Pattern[str], ...]
    normaliser: Callable[[str], str]


class Rules:
    """The identity rules of one config, compiled once; thread-safe and cheap to call."""

    def __init__(self, config: IdentityConfig | None = None) -> None:
        config = config if config is not None else IdentityConfig()
        self._region = config.default_region
        resolved = config.resolved_types()
        # Strongest first, then by name: extraction output comes out in this order unsorted.
        order = sorted(resolved, key=lambda name: (resolved[name].priority, name))
        self.types: Mapping[str, IdentifierType] = MappingProxyType(
            {name: resolved[name] for name in order}
        )
        global_blocked = {value.strip().casefold() for value in config.blocked}
        self._compiled = {
            name: self._compile(spec, global_blocked) for name, spec in self.types.items()
        }
        self._readers = {kind: self._readers_for(kind) for kind in _MESSAGE_TYPES}
        self._other_readers = self._readers_for(None)
        # Identifiers repeat across a user's events; caching spares re-validating them.
        self._cached_check = lru_cache(maxsize=CACHE_SIZE, typed=True)(self._check_text)

    def priority(self, type_name: str) -> int:
        return self._type(type_name).spec.priority

    def over_limit(
        self, type_name: str, existing_seen_at: Sequence[datetime], now: datetime, adding: int
    ) -> bool:
        """Would `adding` more identifiers of this type break its limit on a profile whose
        existing ones of that type were last seen at `existing_seen_at`?

        Only those seen within the window (on or after `now` - window_days) count. Already
        being over the limit (e.g. after it was lowered) counts as over even when adding 0.
        """
        if adding < 0:
            raise ValueError("adding must not be negative")
        spec = self._type(type_name).spec
        if spec.limit is None:
            return False
        if spec.window_days is None:
            count = len(existing_seen_at)
        else:
            since = now - timedelta(days=spec.window_days)
            count = sum(1 for seen in existing_seen_at if seen >= since)
        return count + adding > spec.limit

    def normalise(self, type_name: str, raw_value: object) -> str:
        """The normalised value, or InvalidIdentifier saying why it cannot be used."""
        self._type(type_name)
        value, reason = self._check(type_name, raw_value)
        if reason is not None:
            raise InvalidIdentifier(reason)
        assert value is not None
        return value

    def extract(self, message: Mapping[str, Any]) -> Extracted:
        """The identifiers in a raw Segment message, de-duplicated and strongest first."""
        message_type = message.get("type")
        readers = self._other_readers
        if isinstance(message_type, str):
            readers = self._readers.get(message_type.lower(), readers)
        found = Extracted()
        seen: set[tuple[str, str]] = set()
        seen_rejected: set[tuple[str, str, str]] = set()
        for type_name, keys, shared in readers:
            raw = _lookup(message, keys)
            if raw is None:
                continue
            value, reason = self._check(type_name, raw)
            if reason is not None:
                rejected = (type_name, _shown(raw), reason)
                if rejected not in seen_rejected:
                    seen_rejected.add(rejected)
                    found.rejected.append(rejected)
            elif value is not None and (type_name, value) not in seen:
                seen.add((type_name, value))
                (found.shared if shared else found.identifiers).append((type_name, value))
        return found

    def _type(self, type_name: str) -> _CompiledType:
        compiled = self._compiled.get(type_name)
        if compiled is None:
            raise InvalidIdentifier(f"unknown identifier type {type_name!r}")
        return compiled

    def _compile(self, spec: IdentifierType, global_blocked: set[str]) -> _CompiledType:
        blocked = frozenset(global_blocked | {v.strip().casefold() for v in spec.blocked})
        patterns = tuple(re.compile(p, re.IGNORECASE) for p in spec.blocked_patterns)
        return _CompiledType(spec, blocked, patterns, self._normaliser(spec))

    def _normaliser(self, spec: IdentifierType) -> Callable[[str], str]:
        if spec.normalise == "email":
            return _email
        if spec.normalise == "phone":
            return self._phone
        if spec.normalise == "lower":
            return str.casefold
        if spec.normalise == "regex":
            assert spec.pattern is not None
            return _regex_normaliser(re.compile(spec.pattern))
        return _unchanged

    def _readers_for(self, message_type: str | None) -> tuple[_Reader, ...]:
        readers: list[_Reader] = []
        for name, spec in self.types.items():
            if spec.sources:
                paths = list(spec.sources)
            else:
                builtin = _BUILTIN_SOURCES.get(name, ())
                paths = [path for path, when in builtin if _applies(when, message_type)]
            readers.extend((name, tuple(path.split(".")), spec.shared) for path in paths)
        return tuple(readers)

    def _check(self, type_name: str, raw: object) -> _Checked:
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            return None, _wrong_kind(raw)
        if isinstance(raw, str) and len(raw) > MAX_CACHED_LENGTH:
            return self._check_text(type_name, raw)
        return self._cached_check(type_name, raw)

    def _check_text(self, type_name: str, raw: str | int) -> _Checked:
        """Normalise without raising: the cache keeps results, and exceptions are not kept."""
        compiled = self._compiled[type_name]
        try:
            text = (raw if isinstance(raw, str) else str(raw)).strip()
        except ValueError:  # an int beyond Python's digit limit for str()
            return None, f"longer than {MAX_RAW_LENGTH} characters"
        if not text:
            return None, "empty value"
        if len(text) > MAX_RAW_LENGTH:
            return None, f"longer than {MAX_RAW_LENGTH} characters"
        # Placeholders are refused before normalising too, so "null" reads as blocked, not as a
        # malformed e-mail address.
        if text.casefold() in compiled.blocked:
            return None, "blocked value"
        try:
            value = compiled.normaliser(text)
        except InvalidIdentifier as exc:
            return None, exc.reason
        return _final_checks(compiled, value)

    def _phone(self, text: str) -> str:
        try:
            number = phonenumbers.parse(text, self._region)
        except phonenumbers.NumberParseException as exc:
            if exc.error_type != phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
                raise InvalidIdentifier("not a phone number") from None
            if self._region is None:
                raise InvalidIdentifier(
                    "phone number has no +country code and identity.default_region is not set"
                ) from None
            raise InvalidIdentifier("phone number has an unknown country code") from None
        # is_valid_number, not is_possible_number: the length check alone lets placeholder
        # numbers such as +1 123 456 7890 through, and a junk number shared by strangers would
        # merge them. The cost: ranges newer than the installed phonenumbers are refused.
        if not phonenumbers.is_valid_number(number):
            raise InvalidIdentifier("not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _final_checks(compiled: _CompiledType, value: str) -> _Checked:
    if not value:
        return None, "empty after normalisation"
    if len(value) > MAX_VALUE_LENGTH:
        return None, f"longer than {MAX_VALUE_LENGTH} characters"
    if value.casefold() in compiled.blocked:
        return None, "blocked value"
    for pattern in compiled.blocked_patterns:
        if pattern.fullmatch(value):
            return None, f"blocked by pattern {pattern.pattern!r}"
    return value, None


def _email(text: str) -> str:
    try:
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidIdentifier(f"not a valid e-mail address: {exc}") from None
    # email_validator lower-cases only the domain; mailboxes are case-insensitive in practice.
    return info.normalized.lower()


def _regex_normaliser(pattern: re.Pattern[str]) -> Callable[[str], str]:
    def normalise(text: str) -> str:
        match = pattern.fullmatch(text)
        if match is None:
            raise InvalidIdentifier(f"does not match pattern {pattern.pattern!r}")
        if pattern.groups == 0:
            return match.group(0)
        return (match.group(1) or "").strip()

    return normalise


def _unchanged(text: str) -> str:
    return text


def _lookup(message: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value at `keys`, or None when any step is missing or not an object."""
    value: Any = message
    for key in keys:
        # The exact-type test first: parsed JSON is dicts, and ABC checks cost ~5x more.
        if type(value) is not dict and not isinstance(value, Mapping):
            return None
        value = value.get(key)
        if value is None:
            return None
    return value


def _wrong_kind(raw: object) -> str:
    if isinstance(raw, Mapping):
        return "an object, not a single value"
    if isinstance(raw, list | tuple):
        return "a list, not a single value"
    return f"must be a string or an integer, not {type(raw).__name__}"


def _shown(raw: object) -> str:
    if isinstance(raw, str):
        return raw[:MAX_SHOWN_LENGTH]
    try:
        return str(raw)[:MAX_SHOWN_LENGTH]
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<{type(raw).__name__}>"
