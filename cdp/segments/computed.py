"""Computed traits: aggregates over each profile's event history, stored on
`profiles.computed_traits` so that conditions and readers see them like traits.

```
{"aggregate": "sum", "event": "Order Completed", "property": "total", "within": "30d",
 "where": [{"property": "currency", "op": "=", "value": "EUR"}]}
```

Aggregates: count, sum, min, max, avg, first, last, most_frequent, unique_list, unique_count
(`property` is required for all but count; `event` may be "*" for any event; `type`, `where`
and `within` filter as in segment conditions). Values are recomputed in SQL, for every profile
(bulk) or for a list of profiles (incremental), by the same statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, bindparam, func, select, update

from cdp.segments.compiler import EVENTS, PROFILES, Compiler
from cdp.segments.conditions import (
    ConditionError,
    EventFilter,
    ValueType,
    event_filter,
    property_path,
)
from cdp.segments.jsonsql import JsonPath

AGGREGATES = (
    "count", "sum", "min", "max", "avg", "first", "last", "most_frequent", "unique_list",
    "unique_count",
)  # fmt: skip
NUMERIC = ("sum", "min", "max", "avg")


@dataclass(frozen=True)
class ComputedDefinition:
    key: str
    aggregate: str
    events: EventFilter
    property: tuple[str, ...] | None

    @property
    def value_type(self) -> ValueType:
        if self.aggregate in ("count", "unique_count", *NUMERIC):
            return "number"
        return "list" if self.aggregate == "unique_list" else "any"


def parse_computed(key: str, raw: Any, path: str = "definition") -> ComputedDefinition:
    if not isinstance(raw, dict):
        raise ConditionError(path, 'expected an object such as {"aggregate": "count", …}')
    extra = sorted(set(raw) - {"aggregate", "event", "type", "where", "within", "property"})
    if extra:
        raise ConditionError(f"{path}.{extra[0]}", "unknown key here")
    aggregate = raw.get("aggregate")
    if aggregate not in AGGREGATES:
        raise ConditionError(f"{path}.aggregate", f"expected one of {', '.join(AGGREGATES)}")
    if "event" not in raw:
        raise ConditionError(f"{path}.event", 'name the event to aggregate ("*": any event)')
    prop = None
    if aggregate != "count":
        prop = property_path(raw.get("property"), f"{path}.property")
    elif "property" in raw:
        raise ConditionError(f"{path}.property", "count takes no property")
    return ComputedDefinition(key, aggregate, event_filter(raw, path), prop)


def refresh_values(
    conn: Connection,
    definition: ComputedDefinition,
    now: datetime,
    scope: Sequence[str] | None = None,
) -> None:
    """Recompute the trait for every profile, or for the profiles in `scope`."""
    dialect = conn.dialect.name
    compiler = Compiler(dialect, now, scope)
    values = _aggregate(compiler, definition).subquery("computed")
    column = PROFILES.c.computed_traits
    key = definition.key
    if dialect == "postgresql":
        removed = column.op("-")(bindparam(None, key, type_=String))
        has_key = column.op("?")(bindparam(None, key, type_=String))
        added = column.op("||")(func.jsonb_build_object(key, values.c.value))
    else:
        json_path = bindparam(None, f'$."{key}"', type_=String)
        removed = func.json_remove(column, json_path)
        has_key = func.json_type(column, json_path).is_not(None)
        added = func.json_set(column, json_path, func.json(values.c.value))
    conn.execute(
        update(PROFILES).values(computed_traits=removed).where(has_key, *compiler.in_scope())
    )
    conn.execute(
        update(PROFILES).values(computed_traits=added).where(PROFILES.c.id == values.c.profile_id)
    )


def _aggregate(compiler: Compiler, definition: ComputedDefinition) -> Any:
    """SELECT (profile_id, value as JSON) for the profiles with something to aggregate."""
    e = EVENTS
    pg = compiler.dialect == "postgresql"
    where = compiler.event_filter(definition.events)
    aggregate = definition.aggregate
    if aggregate == "count":
        return _grouped(func.count(), where, pg)
    assert definition.property is not None
    prop = JsonPath(compiler.dialect, e.c.payload, definition.property)
    where = [*where, prop.present()]
    if aggregate in NUMERIC:
        number = getattr(func, aggregate)(prop.number())
        return _grouped(number, where, pg).having(number.is_not(None))
    if aggregate == "unique_count":
        return _grouped(func.count(prop.scalar().distinct()), where, pg)
    if aggregate == "unique_list":
        distinct = prop.scalar().distinct()
        listed = func.jsonb_agg(distinct) if pg else func.json_group_array(distinct)
        return select(e.c.profile_id, listed.label("value")).where(*where).group_by(e.c.profile_id)
    if aggregate in ("first", "last"):
        order = [e.c.timestamp, e.c.id]
        if aggregate == "last":
            order = [c.desc() for c in order]
        ranked = (
            select(
                e.c.profile_id,
                prop.value().label("value"),
                func.row_number().over(partition_by=e.c.profile_id, order_by=order).label("rank"),
            )
            .where(*where)
            .subquery("ranked")
        )
        return select(ranked.c.profile_id, ranked.c.value).where(ranked.c.rank == 1)
    # most_frequent: the value seen most often; ties go to the most recently seen.
    value = prop.scalar()
    counted = (
        select(
            e.c.profile_id,
            (value if pg else func.max(prop.value())).label("value"),
            func.row_number()
            .over(
                partition_by=e.c.profile_id,
                order_by=[func.count().desc(), func.max(e.c.timestamp).desc()],
            )
            .label("rank"),
        )
        .where(*where)
        .group_by(e.c.profile_id, value)
        .subquery("counted")
    )
    return select(counted.c.profile_id, counted.c.value).where(counted.c.rank == 1)


def _grouped(value: ColumnElement[Any], where: list[ColumnElement[bool]], pg: bool) -> Any:
    stored = func.to_jsonb(value) if pg else value
    return (
        select(EVENTS.c.profile_id, stored.label("value"))
        .where(*where)
        .group_by(EVENTS.c.profile_id)
    )
