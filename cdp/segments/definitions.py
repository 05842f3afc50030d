"""Saving, deleting and loading segment and computed-trait definitions.

A definition is validated when it is saved (`ConditionError` names the path of the fault), so the
stored ones always parse; `Definitions` is the parsed set the evaluator works from, with each
segment's dependencies, in an order where a segment comes after those it refers to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from sqlalchemy import Connection, String, bindparam, func, select
from sqlalchemy.orm import Session

from cdp.config import Config
from cdp.db.models import ComputedTrait, Profile, Segment, SegmentMembership, utcnow
from cdp.errors import NotFoundError, UserError
from cdp.segments.computed import ComputedDefinition, parse_computed
from cdp.segments.conditions import (
    Catalog,
    Condition,
    ConditionError,
    EventCondition,
    EventFilter,
    Field,
    SegmentRef,
    ValueType,
    is_time_dependent,
    parse,
    walk,
)
from cdp.segments.jsonsql import JsonPath

KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_JSON_TYPES: dict[str, ValueType] = {
    "number": "number", "integer": "number", "real": "number", "string": "string",
    "text": "string", "boolean": "boolean", "true": "boolean", "false": "boolean",
    "array": "list",
}  # fmt: skip


@dataclass(frozen=True)
class SegmentDefinition:
    key: str
    condition: Condition
    events: tuple[EventFilter, ...]
    """The event filters of its event-history conditions: events that can change it."""
    computed: frozenset[str]
    segments: frozenset[str]
    timed: bool
    """Whether time passing alone can change it (windows, relative dates)."""

    @classmethod
    def of(cls, key: str, condition: Condition) -> SegmentDefinition:
        nodes = list(walk(condition))
        return cls(
            key,
            condition,
            tuple(n.events for n in nodes if isinstance(n, EventCondition)),
            frozenset(n.name for n in nodes if isinstance(n, Field) and n.kind == "computed"),
            frozenset(n.key for n in nodes if isinstance(n, SegmentRef)),
            is_time_dependent(condition),
        )


@dataclass
class Definitions:
    segments: dict[str, SegmentDefinition] = field(default_factory=dict)
    """In dependency order: a segment after the segments it refers to."""
    computed: dict[str, ComputedDefinition] = field(default_factory=dict)

    @property
    def aggregates(self) -> dict[str, str]:
        return {key: d.aggregate for key, d in self.computed.items()}

    def dependents(self, keys: set[str]) -> list[str]:
        """`keys` and every segment that refers to them, directly or not, in dependency order."""
        wanted = set(keys)
        for key, definition in self.segments.items():
            if definition.segments & wanted:
                wanted.add(key)
        return [key for key in self.segments if key in wanted]

    def timed_segments(self) -> list[str]:
        timed = {
            key
            for key, d in self.segments.items()
            if d.timed or any(self.computed[c].events.within for c in d.computed)
        }
        return self.dependents(timed)


def load(conn: Connection | Session) -> Definitions:
    """Every stored definition, parsed (they were validated when saved)."""
    computed = {
        key: parse_computed(key, raw)
        for key, raw in conn.execute(select(ComputedTrait.key, ComputedTrait.definition))
    }
    raw_segments = {k: d for k, d in conn.execute(select(Segment.key, Segment.definition))}
    catalog = Catalog(
        lambda name: "any",
        {k: d.value_type for k, d in computed.items()},
        lambda key: key in raw_segments,
    )
    parsed = {
        key: SegmentDefinition.of(key, parse(raw, catalog)) for key, raw in raw_segments.items()
    }
    order = TopologicalSorter({k: d.segments for k, d in parsed.items()}).static_order()
    return Definitions({k: parsed[k] for k in order}, computed)


def stamp(conn: Connection | Session) -> tuple[Any, ...]:
    """Changes whenever a definition is saved or deleted: the cache key of `load`."""
    return tuple(
        conn.execute(
            select(
                select(func.count()).select_from(Segment).scalar_subquery(),
                select(func.max(Segment.updated_at)).scalar_subquery(),
                select(func.count()).select_from(ComputedTrait).scalar_subquery(),
                select(func.max(ComputedTrait.updated_at)).scalar_subquery(),
            )
        ).one()
    )


# --- validation against the store ---------------------------------------------------------------


def catalog(session: Session, config: Config) -> Catalog:
    declared = config.traits.types
    computed = {
        key: parse_computed(key, raw).value_type
        for key, raw in session.execute(select(ComputedTrait.key, ComputedTrait.definition))
    }

    def trait_type(name: str) -> ValueType | None:
        if name in declared:
            return declared[name]
        return observed_trait_type(session, name)

    keys = set(session.scalars(select(Segment.key)))
    return Catalog(trait_type, computed, lambda key: key in keys)


def observed_trait_type(session: Session, name: str) -> ValueType | None:
    """The JSON type of the trait on some profile that has it; None if none has it."""
    dialect = session.get_bind().dialect.name
    value = JsonPath(dialect, Profile.traits, tuple(name.split(".")))
    found = session.scalar(
        select(value._type()).where(Profile.merged_into.is_(None), value.present()).limit(1)
    )
    if found is None:
        return None
    type_ = _JSON_TYPES.get(found, "any")
    if type_ == "string":  # ISO-looking text: a datetime
        text = session.scalar(select(value.string()).where(value.string().is_not(None)).limit(1))
        if text and re.match(r"^\d{4}-\d\d-\d\d", text):
            return "any"
    return type_


def check_key(key: str, what: str) -> str:
    if not KEY.fullmatch(key):
        raise UserError(f"key: a {what} key is 1 to 128 letters, digits, '_', '.' or '-'")
    return key


# --- saving and deleting ------------------------------------------------------------------------


def save_segment(
    session: Session,
    config: Config,
    key: str,
    definition: Any,
    name: str | None = None,
    description: str = "",
) -> Segment:
    check_key(key, "segment")
    if not isinstance(definition, dict):
        raise ConditionError("definition", "expected a JSON object")
    condition = parse(definition, catalog(session, config))
    others = {k: refs for k, refs in _references(session, "segment") if k != key}
    others[key] = SegmentDefinition.of(key, condition).segments
    try:
        tuple(TopologicalSorter(others).static_order())
    except CycleError as exc:
        cycle = " → ".join(exc.args[1])
        raise ConditionError("definition", f"segments would refer to each other: {cycle}") from None
    row = session.get(Segment, key)
    now = utcnow()
    if row is None:
        row = Segment(key=key, created_at=now)
        session.add(row)
    row.name = name or (row.name if row.name else key)
    row.description = description
    row.definition = definition
    row.updated_at = now
    session.flush()
    return row


def delete_segment(session: Session, key: str) -> None:
    row = session.get(Segment, key)
    if row is None:
        raise NotFoundError(f"key: no segment has the key {key!r}")
    users = [k for k, refs in _references(session, "segment") if key in refs]
    if users:
        raise UserError(f"key: segment {key!r} is used by the segments {', '.join(users)}")
    session.execute(
        SegmentMembership.__table__.delete().where(SegmentMembership.segment_key == key)
    )
    session.delete(row)
    session.flush()


def save_computed(session: Session, key: str, definition: Any) -> ComputedTrait:
    check_key(key, "computed trait")
    parsed = parse_computed(key, definition)
    row = session.get(ComputedTrait, key)
    now = utcnow()
    if row is not None and parse_computed(key, row.definition).value_type != parsed.value_type:
        users = [k for k, refs in _references(session, "computed") if key in refs]
        if users:
            raise UserError(
                f"definition.aggregate: would change the type of {key!r}, which the segments "
                f"{', '.join(users)} compare; change them first"
            )
    if row is None:
        row = ComputedTrait(key=key, created_at=now)
        session.add(row)
    row.definition = definition
    row.updated_at = now
    session.flush()
    return row


def delete_computed(session: Session, key: str) -> None:
    row = session.get(ComputedTrait, key)
    if row is None:
        raise NotFoundError(f"key: no computed trait has the key {key!r}")
    users = [k for k, refs in _references(session, "computed") if key in refs]
    if users:
        raise UserError(f"key: computed trait {key!r} is used by the segments {', '.join(users)}")
    session.delete(row)
    dialect = session.get_bind().dialect.name
    column = Profile.__table__.c.computed_traits
    if dialect == "postgresql":
        removed = column.op("-")(bindparam(None, key, type_=String))
    else:
        removed = func.json_remove(column, bindparam(None, f'$."{key}"', type_=String))
    session.execute(Profile.__table__.update().values(computed_traits=removed))
    session.flush()


def _references(session: Session, kind: str) -> list[tuple[str, frozenset[str]]]:
    found = load(session).segments
    return [(k, d.segments if kind == "segment" else d.computed) for k, d in found.items()]
