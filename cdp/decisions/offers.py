"""Offers: the validated form (`OfferSpec`) of what content providers supply and admins save.

An offer definition is a JSON object (a TOML table in config):

```
{"key": "welcome",                    required: 1 to 128 letters, digits, '_', '.' or '-'
 "name": "Welcome discount",          required: 1 to 255 characters
 "value": 10,                         required: a finite number (what the offer is worth)
 "cost": 2,                           ≥ 0 (default 0)
 "priority": 5, "levers": 1.5,        any finite number (default 0); levers ≥ 0 (default 1)
 "tags": ["onboarding"],              at most 64 distinct tags of 1 to 64 characters
 "valid_from": "2025-01-01T00:00:00Z", "valid_until": "2025-02-01",   ISO-8601 (no zone: UTC)
 "eligibility": {"trait": "plan", "op": "=", "value": "free"},   a condition (see segments)
 "prerequisites": [{"offer": "catalogue:intro", "outcome": "shown"}],   "accepted" (default)
                                                                   or "shown"; a bare key
                                                                   means this provider's offer
 "budget": 1000,                      presentations in all, to everyone
 "propensity": "p_welcome",           the score to rank it by
 "content": {"email": {"subject": "Hi {{ profile.traits.first_name }}", "html": "…"},
             "*": {"text": "…"}}}     channel ("*": any) → field → template (see templates.py)
```

`parse_offer` refuses anything else, each fault naming its path
(`definition.content.email.subject: unexpected '}'`, `definition.valid_until: expected an
ISO-8601 time, got 'soon'`, `definition.eligibility.and[0].op: …`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

from cdp.decisions.templates import check_template
from cdp.segments.conditions import Catalog, Condition, ConditionError, check_name, parse
from cdp.segments.storable import check_storable

KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}\Z")
PROVIDER = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
CHANNEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
TAG = re.compile(r"^[^\x00-\x1f\x7f]{1,64}\Z")
ANY_CHANNEL = "*"
MAX_NAME = 255
MAX_TAGS = 64
MAX_CHANNELS = 16
MAX_FIELDS = 32
MAX_PREREQUISITES = 32
MAX_NUMBER = 1e15
MAX_BUDGET = 2**31 - 1
"""Budgets are GraphQL Ints."""
OUTCOMES = ("accepted", "shown")
KEYS = (
    "key", "name", "value", "cost", "priority", "levers", "tags", "valid_from", "valid_until",
    "eligibility", "prerequisites", "budget", "propensity", "content",
)  # fmt: skip


class OfferError(ConditionError):
    """A fault in an offer definition; the message starts with its path."""


@dataclass(frozen=True)
class OfferSpec:
    """A validated offer. Nested values are read-only (tuples and mapping proxies)."""

    id: str
    """"<provider>:<key>"."""
    provider: str
    key: str
    name: str
    value: float
    cost: float = 0.0
    priority: float = 0.0
    levers: float = 1.0
    tags: tuple[str, ...] = ()
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    eligibility: Condition | None = None
    prerequisites: tuple[tuple[str, str], ...] = ()
    """(offer id, "accepted" | "shown") pairs: this offer only after those."""
    budget: int | None = None
    """Presentations in all, to everyone; None: no limit."""
    propensity: str | None = None
    """The score name strategies rank it by."""
    content: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    """{channel: {field: template source}}; the channel "*" serves any channel."""
    definition: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )
    """The definition as given (read-only; datetimes as ISO-8601 text)."""

    def __hash__(self) -> int:  # its nested mappings are unhashable; its id is unique
        return hash(self.id)

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels it has content for ("*": any channel)."""
        return tuple(self.content)

    def content_for(self, channel: str) -> Mapping[str, str] | None:
        """The templates for `channel`, else those for any channel ("*"), else None."""
        found = self.content.get(channel)
        return found if found is not None else self.content.get(ANY_CHANNEL)

    def as_mapping(self) -> dict[str, Any]:
        """The offer as strategies and content providers receive it: a new dict (its nested
        values read-only), with times as ISO-8601 text and `eligibility` as its JSON."""
        return {
            "id": self.id,
            "provider": self.provider,
            "key": self.key,
            "name": self.name,
            "value": self.value,
            "cost": self.cost,
            "priority": self.priority,
            "levers": self.levers,
            "tags": self.tags,
            "valid_from": _iso(self.valid_from),
            "valid_until": _iso(self.valid_until),
            "eligibility": self.definition.get("eligibility"),
            "prerequisites": tuple(
                MappingProxyType({"offer": offer, "outcome": outcome})
                for offer, outcome in self.prerequisites
            ),
            "budget": self.budget,
            "propensity": self.propensity,
            "content": self.content,
        }

    def definition_json(self) -> dict[str, Any]:
        """The definition as plain, JSON-serialisable dicts and lists."""
        return thaw(self.definition)  # type: ignore[no-any-return]


def offer_id(provider: str, key: str) -> str:
    return f"{provider}:{key}"


def split_id(raw: Any, path: str) -> tuple[str, str]:
    """("provider", "key") of an offer id "<provider>:<key>"."""
    provider, sep, key = raw.partition(":") if isinstance(raw, str) else ("", "", "")
    if not sep or not PROVIDER.match(provider) or not KEY.match(key):
        raise OfferError(path, f"expected an offer id '<provider>:<key>', got {_shown(raw)}")
    return provider, key


# --- parsing -------------------------------------------------------------------------------------


def parse_offer(provider: str, raw: Any, catalog: Catalog, path: str = "definition") -> OfferSpec:
    """Validate an offer definition of the provider named `provider`; `catalog` is what its
    eligibility condition may refer to (`cdp.segments.definitions.catalog`)."""
    if not isinstance(raw, Mapping):
        raise OfferError(path, "expected an object with key, name, value and content")
    try:
        check_storable(_storable(raw), path)
    except (TypeError, AttributeError):  # a key that is no string (a provider's own code)
        raise OfferError(path, "every key must be a string") from None
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise OfferError(
            f"{path}.{_key_shown(unknown[0])}", f"unknown key (known: {', '.join(KEYS)})"
        )
    for required in ("key", "name", "value", "content"):
        if raw.get(required) is None:
            raise OfferError(f"{path}.{required}", "required")
    key = raw["key"]
    if not isinstance(key, str) or not KEY.match(key):
        raise OfferError(f"{path}.key", "1 to 128 letters, digits, '_', '.' or '-'")
    if not PROVIDER.match(provider):
        raise OfferError("provider", "1 to 64 letters, digits, '_', '.' or '-'")
    id_ = offer_id(provider, key)
    valid_from = _time(raw.get("valid_from"), f"{path}.valid_from")
    valid_until = _time(raw.get("valid_until"), f"{path}.valid_until")
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise OfferError(f"{path}.valid_until", "must be later than valid_from")
    eligibility = raw.get("eligibility")
    return OfferSpec(
        id=id_,
        provider=provider,
        key=key,
        name=_name(raw["name"], f"{path}.name"),
        value=_number(raw["value"], f"{path}.value"),
        cost=_number(raw.get("cost", 0), f"{path}.cost", minimum=0),
        priority=_number(raw.get("priority", 0), f"{path}.priority"),
        levers=_number(raw.get("levers", 1), f"{path}.levers", minimum=0),
        tags=_tags(raw.get("tags", []), f"{path}.tags"),
        valid_from=valid_from,
        valid_until=valid_until,
        eligibility=None
        if eligibility is None
        else parse(eligibility, catalog, f"{path}.eligibility"),
        prerequisites=_prerequisites(
            raw.get("prerequisites", []), provider, id_, f"{path}.prerequisites"
        ),
        budget=_budget(raw.get("budget"), f"{path}.budget"),
        propensity=None
        if raw.get("propensity") is None
        else check_name(raw["propensity"], f"{path}.propensity"),
        content=_content(raw["content"], f"{path}.content"),
        definition=freeze(raw),
    )


def _name(raw: Any, path: str) -> str:
    if (
        not isinstance(raw, str)
        or not 0 < len(raw) <= MAX_NAME
        or raw.strip() != raw
        or not raw.isprintable()
    ):
        raise OfferError(
            path, f"expected a name of 1 to {MAX_NAME} printable characters, not blank-padded"
        )
    return raw


def _number(raw: Any, path: str, minimum: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise OfferError(path, f"expected a number, got {_shown(raw)}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise OfferError(path, "expected a finite number")
    if abs(raw) > MAX_NUMBER:
        raise OfferError(path, f"at most {MAX_NUMBER:.0e} in size")
    if minimum is not None and raw < minimum:
        raise OfferError(path, f"must be at least {minimum:g}")
    return float(raw)


def _tags(raw: Any, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or len(raw) > MAX_TAGS:
        raise OfferError(path, f"expected a list of at most {MAX_TAGS} tags")
    seen: list[str] = []
    for i, tag in enumerate(raw):
        if not isinstance(tag, str) or not TAG.match(tag) or tag.strip() != tag:
            raise OfferError(f"{path}[{i}]", "a tag is 1 to 64 characters, not blank-padded")
        if tag in seen:
            raise OfferError(f"{path}[{i}]", f"{tag!r} is listed twice")
        seen.append(tag)
    return tuple(seen)


def _time(raw: Any, path: str) -> datetime | None:
    if raw is None:
        return None
    found: datetime | None = None
    if isinstance(raw, datetime):
        found = raw
    elif isinstance(raw, date):  # a TOML date
        found = datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str) and len(raw) <= 64:
        try:
            found = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            found = None
    if found is None:
        raise OfferError(path, f"expected an ISO-8601 time, got {_shown(raw)}")
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def _prerequisites(raw: Any, provider: str, own_id: str, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list | tuple) or len(raw) > MAX_PREREQUISITES:
        raise OfferError(path, f"expected a list of at most {MAX_PREREQUISITES} prerequisites")
    found: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        at = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise OfferError(at, 'expected {"offer": "<provider>:<key>", "outcome": "accepted"}')
        extra = [k for k in item if k not in ("offer", "outcome")]
        if extra:
            raise OfferError(f"{at}.{_key_shown(extra[0])}", "unknown key (offer, outcome)")
        needed = item.get("offer")
        if isinstance(needed, str) and ":" not in needed and KEY.match(needed):
            needed = offer_id(provider, needed)  # a bare key: this provider's offer
        needed = offer_id(*split_id(needed, f"{at}.offer"))
        if needed == own_id:
            raise OfferError(f"{at}.offer", "an offer cannot be its own prerequisite")
        outcome = item.get("outcome", "accepted")
        if outcome not in OUTCOMES:
            raise OfferError(f"{at}.outcome", f"expected accepted or shown, got {_shown(outcome)}")
        if any(other == needed for other, _ in found):
            raise OfferError(f"{at}.offer", f"{needed!r} is listed twice")
        found.append((needed, outcome))
    return tuple(found)


def _budget(raw: Any, path: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_BUDGET:
        raise OfferError(path, f"expected a whole number of presentations, 0 to {MAX_BUDGET}")
    return raw


def _content(raw: Any, path: str) -> Mapping[str, Mapping[str, str]]:
    if not isinstance(raw, Mapping) or not raw:
        raise OfferError(path, 'expected {"<channel>": {"<field>": "<template>"}, …}')
    if len(raw) > MAX_CHANNELS:
        raise OfferError(path, f"at most {MAX_CHANNELS} channels")
    channels: dict[str, Mapping[str, str]] = {}
    for channel, fields in raw.items():
        if not isinstance(channel, str) or not (channel == ANY_CHANNEL or CHANNEL.match(channel)):
            raise OfferError(
                f"{path}.{_key_shown(channel)}",
                "a channel is '*' or 1 to 64 letters, digits, '_', '.' or '-'",
            )
        at = f"{path}.{channel}"
        if not isinstance(fields, Mapping):
            raise OfferError(at, 'expected {"<field>": "<template>", …}')
        if len(fields) > MAX_FIELDS:
            raise OfferError(at, f"at most {MAX_FIELDS} fields")
        checked: dict[str, str] = {}
        for name, source in fields.items():
            if not isinstance(name, str) or not FIELD.match(name):
                raise OfferError(
                    f"{at}.{_key_shown(name)}",
                    "a field name is a letter or '_', then letters, digits or '_' (≤ 64)",
                )
            check_template(source, f"{at}.{name}")
            checked[name] = source
        channels[channel] = MappingProxyType(checked)
    return MappingProxyType(channels)


class _AnyType(Mapping[str, Any]):
    """Every computed-trait key, of any type."""

    def __getitem__(self, key: str) -> str:
        return "any"

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


STRUCTURAL = Catalog(lambda name: "any", _AnyType(), lambda key: True)
"""A catalog that takes every trait, computed trait and segment as existing: for checking
offers' shape where there is no database (config, at start); the core checks them again
against the store when it loads them."""


# --- helpers -------------------------------------------------------------------------------------


def freeze(value: Any) -> Any:
    """A read-only copy of validated JSON-like data: mappings → proxies, lists → tuples,
    dates and times → ISO-8601 text."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (for JSON)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def _storable(raw: Mapping[Any, Any]) -> Any:
    """`raw` for the storage guard (sizes, NULs): non-JSON leaves (TOML dates) left out."""
    return {k: v for k, v in raw.items() if not isinstance(v, datetime | date)}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 64 else text[:61] + "…"


def _key_shown(key: Any) -> str:
    text = str(key)
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= 64 else text[:64] + "…"
