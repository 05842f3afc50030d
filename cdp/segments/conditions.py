"""The condition language: a JSON tree, validated into typed nodes, used by segments (and later by
offer eligibility and triggers).

```
{"and": [C, …]}   {"or": [C, …]}   {"not": C}
{"trait": "plan", "op": "=", "value": "pro"}             traits (dotted paths reach nested ones)
{"computed": "orders_30d", "op": ">=", "value": 2}       computed traits
{"score": "churn", "op": ">", "value": 0.7}              model scores (a string value: the label)
{"identifier": "email", "op": "exists"}                  identifiers (exists, =, !=, in, contains)
{"consent": "marketing", "channel": "email", "op": "=", "value": "granted"}
{"event": "Order Completed", "where": [{"property": "total", "op": ">", "value": 50}],
 "within": "30d", "count": {"op": ">=", "value": 2}}     event history ("*": any event name;
                                                          "sum" / "min" / "max" / "avg" take a
                                                          "property"; no aggregate: count >= 1)
{"segment": "vip"}                                       membership of another segment
```

Operators: `=`, `!=` (true when the field is missing too), `<`, `<=`, `>`, `>=`, `in`, `contains`,
`exists`, `between` ([low, high], inclusive), `within_last` / `not_within_last` (a datetime
within, or before, the last "7d"; durations are N followed by s, m, h, d or w).

Every fault raises `ConditionError` naming the path in the tree (`definition.and[1].count.op`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cdp.errors import UserError

MAX_DEPTH = 16
MAX_NODES = 256
MAX_IN = 1000
FieldKind = Literal["trait", "computed", "score", "identifier", "consent"]
FIELD_KINDS: tuple[FieldKind, ...] = ("trait", "computed", "score", "identifier", "consent")
Aggregate = Literal["count", "sum", "min", "max", "avg"]
AGGREGATES: tuple[Aggregate, ...] = ("count", "sum", "min", "max", "avg")
ValueType = Literal["number", "string", "boolean", "datetime", "list", "any"]
OPS = (
    "=", "!=", "<", "<=", ">", ">=", "in", "contains", "exists", "between",
    "within_last", "not_within_last",
)  # fmt: skip
ORDERED = ("<", "<=", ">", ">=", "between")
RELATIVE = ("within_last", "not_within_last")
_DURATION = re.compile(r"^(\d{1,6}) ?(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_NAME = re.compile(r'^[^"\\\x00-\x1f]{1,255}$')


class ConditionError(UserError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


# --- the nodes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predicate:
    """What a value is tested with: an operator and its operand."""

    op: str
    value: Any = None

    @property
    def holds_for_missing(self) -> bool:
        return self.op == "!="


@dataclass(frozen=True)
class And:
    children: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    child: Condition


@dataclass(frozen=True)
class Field:
    kind: FieldKind
    name: str
    test: Predicate
    channel: str = "*"
    """Consents only: the channel the consent is for ("*": every channel)."""

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split(".")) if self.kind == "trait" else (self.name,)


@dataclass(frozen=True)
class PropertyFilter:
    path: tuple[str, ...]
    """The property's path in the event payload, e.g. ("properties", "total")."""
    test: Predicate


@dataclass(frozen=True)
class EventFilter:
    """Which events count: by name, type, properties and age."""

    name: str | None
    """None: any name."""
    type: str | None
    where: tuple[PropertyFilter, ...]
    within: timedelta | None

    def matches(self, type_: str, name: str | None) -> bool:
        """Whether an event of this type and name can count (properties not checked)."""
        return (self.name is None or self.name == name) and (self.type in (None, type_))


@dataclass(frozen=True)
class EventCondition:
    events: EventFilter
    aggregate: Aggregate
    property: tuple[str, ...] | None
    """The summed / compared property's path; None for count."""
    test: Predicate


@dataclass(frozen=True)
class SegmentRef:
    key: str


Condition = And | Or | Not | Field | EventCondition | SegmentRef


def walk(condition: Condition) -> Iterator[Condition]:
    """Every node of the tree, parents first."""
    yield condition
    if isinstance(condition, And | Or):
        for child in condition.children:
            yield from walk(child)
    elif isinstance(condition, Not):
        yield from walk(condition.child)


def is_time_dependent(condition: Condition) -> bool:
    """Whether the passing of time alone can change the result (windows, relative dates)."""
    for node in walk(condition):
        if isinstance(node, EventCondition) and node.events.within is not None:
            return True
        if isinstance(node, Field) and node.test.op in RELATIVE:
            return True
    return False


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """What a condition may refer to, for validation."""

    trait_type: Callable[[str], ValueType | None]
    """A trait's type: declared in config or seen in the data; None: no profile has it."""
    computed: Mapping[str, ValueType]
    """Computed trait keys and the type of their values."""
    segments: Callable[[str], bool]
    """Whether a segment with this key exists."""


def parse(raw: Any, catalog: Catalog, path: str = "definition") -> Condition:
    parser = _Parser(catalog)
    return parser.node(raw, path, 0)


def parse_duration(raw: Any, path: str) -> timedelta:
    match = _DURATION.match(raw) if isinstance(raw, str) else None
    if match is None or int(match[1]) == 0:
        raise ConditionError(path, f'expected a duration such as "30d", "12h" or "2w", got {raw!r}')
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def parse_datetime(raw: Any, path: str) -> datetime:
    try:
        if not isinstance(raw, str):
            raise ValueError
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConditionError(path, f"expected an ISO-8601 date or time, got {raw!r}") from None


def check_name(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not _NAME.fullmatch(raw) or raw.strip() != raw:
        raise ConditionError(
            path, "expected a name of 1 to 255 characters without quotes, backslashes or controls"
        )
    return raw


class _Parser:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.count = 0

    def node(self, raw: Any, path: str, depth: int) -> Condition:
        self.count += 1
        if self.count > MAX_NODES:
            raise ConditionError(path, f"a condition may have at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ConditionError(path, f"conditions nest at most {MAX_DEPTH} deep")
        if not isinstance(raw, dict) or not raw:
            raise ConditionError(path, 'expected an object such as {"trait": …, "op": …}')
        for key in ("and", "or"):
            if key in raw:
                self._only(raw, path, {key})
                items = raw[key]
                if not isinstance(items, list) or not items:
                    raise ConditionError(f"{path}.{key}", "expected a non-empty list of conditions")
                children = tuple(
                    self.node(item, f"{path}.{key}[{i}]", depth + 1) for i, item in enumerate(items)
                )
                return And(children) if key == "and" else Or(children)
        if "not" in raw:
            self._only(raw, path, {"not"})
            return Not(self.node(raw["not"], f"{path}.not", depth + 1))
        if "segment" in raw:
            self._only(raw, path, {"segment"})
            key = check_name(raw["segment"], f"{path}.segment")
            if not self.catalog.segments(key):
                raise ConditionError(f"{path}.segment", f"no segment has the key {key!r}")
            return SegmentRef(key)
        if "event" in raw:
            return self._event(raw, path)
        kinds = [k for k in FIELD_KINDS if k in raw]
        if len(kinds) != 1:
            known = ", ".join(("and", "or", "not", "segment", "event", *FIELD_KINDS))
            raise ConditionError(path, f"expected exactly one of {known}; got {sorted(raw)}")
        return self._field(raw, path, kinds[0])

    def _only(self, raw: Mapping[str, Any], path: str, allowed: set[str]) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            raise ConditionError(f"{path}.{extra[0]}", "unknown key here")

    def _field(self, raw: Mapping[str, Any], path: str, kind: FieldKind) -> Field:
        allowed = {kind, "op", "value"} | ({"channel"} if kind == "consent" else set())
        self._only(raw, path, allowed)
        name = check_name(raw[kind], f"{path}.{kind}")
        channel = check_name(raw.get("channel", "*"), f"{path}.channel")
        if kind == "trait":
            if any(not part for part in name.split(".")):
                raise ConditionError(f"{path}.trait", "empty part in a dotted trait path")
            type_ = self.catalog.trait_type(name)
            if type_ is None and raw.get("op") in (*ORDERED, *RELATIVE, "contains"):
                raise ConditionError(
                    f"{path}.trait",
                    f"unknown trait {name!r}: no profile has it and [traits] types does not "
                    f"declare it, so {raw.get('op')!r} cannot be checked",
                )
            type_ = type_ or "any"
        elif kind == "computed":
            if name not in self.catalog.computed:
                raise ConditionError(f"{path}.computed", f"no computed trait has the key {name!r}")
            type_ = self.catalog.computed[name]
        elif kind == "score":
            type_ = "string" if isinstance(raw.get("value"), str) else "number"
        else:
            type_ = "string"
        ops = ("exists", "=", "!=", "in", "contains") if kind == "identifier" else None
        if kind == "consent":
            ops = ("exists", "=", "!=", "in")
        test = _test(raw, path, type_, ops)
        if kind == "consent" and test.op != "exists":
            statuses = test.value if isinstance(test.value, list) else [test.value]
            bad = [s for s in statuses if s not in ("granted", "denied", "revoked")]
            if bad:
                raise ConditionError(
                    f"{path}.value", f"consent status is granted, denied or revoked, not {bad[0]!r}"
                )
        return Field(kind, name, test, channel)

    def _event(self, raw: Mapping[str, Any], path: str) -> EventCondition:
        self._only(raw, path, {"event", "type", "where", "within", *AGGREGATES})
        events = event_filter(raw, path)
        aggregates = [a for a in AGGREGATES if a in raw]
        if len(aggregates) > 1:
            raise ConditionError(f"{path}.{aggregates[1]}", "give at most one aggregate")
        if not aggregates:
            return EventCondition(events, "count", None, Predicate(">=", 1))
        aggregate = aggregates[0]
        spec = raw[aggregate]
        where = f"{path}.{aggregate}"
        if not isinstance(spec, dict):
            raise ConditionError(where, 'expected an object such as {"op": ">=", "value": 2}')
        prop: tuple[str, ...] | None = None
        if aggregate == "count":
            self._only(spec, where, {"op", "value"})
        else:
            self._only(spec, where, {"property", "op", "value"})
            prop = property_path(spec.get("property"), f"{where}.property")
        test = _test(spec, where, "number", ("=", "!=", "<", "<=", ">", ">=", "between"))
        return EventCondition(events, aggregate, prop, test)


def event_filter(raw: Mapping[str, Any], path: str) -> EventFilter:
    """The `event`, `type`, `where` and `within` keys (shared with computed traits)."""
    name = raw.get("event")
    if name == "*":
        name = None
    elif name is not None:
        name = check_name(name, f"{path}.event")
    type_ = raw.get("type")
    if type_ is not None and type_ not in ("track", "page", "screen", "identify", "group", "alias"):
        raise ConditionError(
            f"{path}.type", "expected track, page, screen, identify, group or alias"
        )
    filters = raw.get("where", [])
    if not isinstance(filters, list) or len(filters) > 32:
        raise ConditionError(f"{path}.where", "expected a list of at most 32 property filters")
    where = []
    for i, item in enumerate(filters):
        at = f"{path}.where[{i}]"
        if not isinstance(item, dict):
            raise ConditionError(at, 'expected {"property": …, "op": …, "value": …}')
        extra = sorted(set(item) - {"property", "op", "value"})
        if extra:
            raise ConditionError(f"{at}.{extra[0]}", "unknown key here")
        prop = property_path(item.get("property"), f"{at}.property")
        value_type = _value_type(item.get("value"))
        where.append(PropertyFilter(prop, _test(item, at, value_type, None)))
    within = raw.get("within")
    return EventFilter(
        name,
        type_,
        tuple(where),
        parse_duration(within, f"{path}.within") if within is not None else None,
    )


def property_path(raw: Any, path: str) -> tuple[str, ...]:
    name = check_name(raw, path)
    parts = tuple(name.split("."))
    if any(not part for part in parts):
        raise ConditionError(path, "empty part in a dotted property path")
    return ("properties", *parts)


def _value_type(value: Any) -> ValueType:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return "number"
    return "any"


def _test(
    raw: Mapping[str, Any], path: str, type_: ValueType, ops: tuple[str, ...] | None
) -> Predicate:
    op = raw.get("op")
    allowed = ops or OPS
    if op not in allowed:
        raise ConditionError(f"{path}.op", f"expected one of {', '.join(allowed)}; got {op!r}")
    value = raw.get("value")
    at = f"{path}.value"
    if op == "exists":
        if "value" in raw:
            raise ConditionError(at, "exists takes no value (wrap it in not for 'missing')")
        return Predicate(op)
    if "value" not in raw:
        raise ConditionError(at, f"{op} needs a value")
    if op in RELATIVE:
        if type_ not in ("datetime", "any"):
            raise ConditionError(f"{path}.op", f"{op} needs a datetime, not a {type_}")
        return Predicate(op, parse_duration(value, at))
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise ConditionError(at, "between needs [low, high]")
        return Predicate(op, [_ordered(v, f"{at}[{i}]", type_) for i, v in enumerate(value)])
    if op in ORDERED:
        return Predicate(op, _ordered(value, at, type_))
    if op == "in":
        if not isinstance(value, list) or not 0 < len(value) <= MAX_IN:
            raise ConditionError(at, f"in needs a list of 1 to {MAX_IN} values")
        for i, item in enumerate(value):
            _scalar(item, f"{at}[{i}]", type_)
        if len({type(v) for v in value}) > 1:
            raise ConditionError(at, "in needs values of one type")
        return Predicate(op, value)
    if op == "contains":
        if type_ not in ("string", "list", "any"):
            raise ConditionError(f"{path}.op", f"contains needs a string or a list, not a {type_}")
        _scalar(value, at, "any")
        return Predicate(op, value)
    _scalar(value, at, type_)  # = and !=
    return Predicate(op, value)


def _scalar(value: Any, path: str, type_: ValueType) -> None:
    if value is None or isinstance(value, dict | list):
        raise ConditionError(path, "expected a string, number or boolean")
    expected = {"number": (int, float), "string": (str,), "boolean": (bool,), "datetime": (str,)}
    if type_ in expected and (
        not isinstance(value, expected[type_]) or (type_ == "number" and isinstance(value, bool))
    ):
        raise ConditionError(path, f"expected a {type_}, got {value!r}")
    if type_ == "datetime":
        parse_datetime(value, path)
    if isinstance(value, float) and value != value:  # NaN compares with nothing
        raise ConditionError(path, "NaN is not a value")


def _ordered(value: Any, path: str, type_: ValueType) -> float | datetime:
    """An operand of <, <=, >, >= or between: a number, or a datetime for datetime fields."""
    if isinstance(value, int | float) and not isinstance(value, bool) and type_ != "datetime":
        if value != value or value in (float("inf"), float("-inf")):
            raise ConditionError(path, "expected a finite number")
        return value
    if isinstance(value, str) and type_ in ("datetime", "any"):
        return parse_datetime(value, path)
    if type_ not in ("number", "datetime", "any"):
        raise ConditionError(path, f"ordering operators need a number or datetime, not a {type_}")
    raise ConditionError(path, f"expected a {'datetime' if type_ == 'datetime' else 'number'}")
