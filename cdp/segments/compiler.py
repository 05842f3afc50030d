"""Conditions compiled to SQL that runs in the database, on SQLite and PostgreSQL.

A condition becomes a WHERE clause over `profiles`. Each event-history condition becomes one
aggregate per profile (`SELECT profile_id, count(*) … GROUP BY profile_id`) joined with LEFT
JOIN, so "did not" and "fewer than" (which hold for profiles with no events) and "at least"
share one shape, and the database can hash-join it. A `scope` (a list of profile ids) restricts
both the profiles and every aggregate to them: incremental evaluation is the bulk query on a
handful of profiles. For a single profile given as a bound parameter (decisions), each aggregate
is a correlated subquery instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql import Subquery
from sqlalchemy.sql.elements import BindParameter

from cdp.db.models import (
    Consent,
    Event,
    Identifier,
    Profile,
    Score,
    SegmentMembership,
    UTCDateTime,
)
from cdp.segments.conditions import (
    And,
    Condition,
    EventCondition,
    EventFilter,
    Field,
    Not,
    Or,
    Predicate,
    SegmentRef,
)
from cdp.segments.jsonsql import JsonPath

PROFILES = Profile.__table__
EVENTS = Event.__table__
MEMBERSHIPS = SegmentMembership.__table__
COUNTING = ("count", "unique_count")
"""Computed-trait aggregates whose value is 0, not missing, for a profile without events."""


@dataclass
class Compiler:
    dialect: str
    now: datetime
    scope: Sequence[str] | BindParameter[str] | None = None
    """Profile ids, or a bound parameter naming one profile (for statements built once and
    run for many profiles)."""
    computed: Mapping[str, str] = field(default_factory=dict)
    """Computed trait key → its aggregate (counts read as 0 where not stored)."""
    joins: list[tuple[Subquery, ColumnElement[bool]]] = field(default_factory=list)

    # --- entry points ----------------------------------------------------------------------

    def members(self, condition: Condition) -> Select[Any]:
        """SELECT the ids of the live profiles (in scope) that meet the condition."""
        where = self.condition(condition)
        query = select(PROFILES.c.id).select_from(self.from_clause())
        return query.where(PROFILES.c.merged_into.is_(None), where, *self.in_scope())

    def changes(self, key: str, condition: Condition) -> Select[Any]:
        """SELECT (profile id, member now) of the profiles whose membership of segment `key`
        is not what the condition now says: those to enter (1) and those to leave (0)."""
        meets = case(
            (and_(PROFILES.c.merged_into.is_(None), self.condition(condition)), 1), else_=0
        )
        current = MEMBERSHIPS.alias("current")
        joined = self.from_clause().outerjoin(
            current,
            and_(
                current.c.segment_key == key,
                current.c.profile_id == PROFILES.c.id,
                current.c.left_at.is_(None),
            ),
        )
        was = case((current.c.profile_id.is_(None), 0), else_=1)
        return (
            select(PROFILES.c.id, meets.label("member"))
            .select_from(joined)
            .where(meets != was, *self.in_scope())
        )

    def from_clause(self) -> FromClause:
        joined: FromClause = PROFILES
        for sub, on in self.joins:
            joined = joined.outerjoin(sub, on)
        return joined

    def in_scope(self, col: ColumnElement[Any] | None = None) -> list[ColumnElement[bool]]:
        if self.scope is None:
            return []
        column = PROFILES.c.id if col is None else col
        if isinstance(self.scope, BindParameter):
            return [column == self.scope]
        return [column.in_(list(self.scope))]

    # --- the tree ---------------------------------------------------------------------------

    def condition(self, node: Condition) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(*(self.condition(c) for c in node.children))
        if isinstance(node, Or):
            return or_(*(self.condition(c) for c in node.children))
        if isinstance(node, Not):
            # Three-valued logic: NOT NULL is NULL, and a profile without the value must count
            # as "not" it, so the child is made two-valued first.
            return not_(func.coalesce(self.condition(node.child), false()))
        if isinstance(node, SegmentRef):
            return exists(
                select(1).where(
                    MEMBERSHIPS.c.segment_key == node.key,
                    MEMBERSHIPS.c.profile_id == PROFILES.c.id,
                    MEMBERSHIPS.c.left_at.is_(None),
                )
            )
        if isinstance(node, EventCondition):
            return self._event(node)
        return self._field(node)

    def _field(self, node: Field) -> ColumnElement[bool]:
        if node.kind == "trait":
            return self.json_test(JsonPath(self.dialect, PROFILES.c.traits, node.path), node.test)
        if node.kind == "computed":
            value = JsonPath(self.dialect, PROFILES.c.computed_traits, node.path)
            default = 0 if self.computed.get(node.name) in COUNTING else None
            return self.json_test(value, node.test, default)
        if node.kind == "score":
            scores = Score.__table__
            column = scores.c.label if isinstance(node.test.value, str) else scores.c.value
            if node.test.op == "between" or isinstance(node.test.value, list):
                column = scores.c.value if not _strings(node.test.value) else scores.c.label
            value = (
                select(column)
                .where(scores.c.profile_id == PROFILES.c.id, scores.c.name == node.name)
                .scalar_subquery()
            )
            return self.column_test(value, node.test)
        if node.kind == "identifier":
            ids = Identifier.__table__
            return self._exists_test(
                select(1).where(ids.c.profile_id == PROFILES.c.id, ids.c.type == node.name),
                ids.c.value,
                node.test,
            )
        consents = Consent.__table__
        return self._exists_test(
            select(1).where(
                consents.c.profile_id == PROFILES.c.id,
                consents.c.purpose == node.name,
                consents.c.channel == node.channel,
            ),
            consents.c.status,
            node.test,
        )

    def _exists_test(
        self, rows: Select[Any], column: ColumnElement[Any], test: Predicate
    ) -> ColumnElement[bool]:
        """For values that are rows (identifiers, consents): is there a row that passes?"""
        if test.op == "exists":
            return exists(rows)
        if test.op == "!=":
            return not_(exists(rows.where(column == test.value)))
        return exists(rows.where(self.column_test(column, test)))

    # --- event history ------------------------------------------------------------------------

    def _event(self, node: EventCondition) -> ColumnElement[bool]:
        e = EVENTS
        if node.aggregate == "count":
            value: ColumnElement[Any] = func.count()
        else:
            assert node.property is not None
            number = JsonPath(self.dialect, e.c.payload, node.property).number()
            value = getattr(func, node.aggregate)(number)
        found: ColumnElement[Any]
        if isinstance(self.scope, BindParameter):
            # One profile: a correlated aggregate reads its few events through the index,
            # where a joined GROUP BY would be built first.
            where = [*self.event_filter(node.events), e.c.profile_id == PROFILES.c.id]
            found = select(value).where(*where).scalar_subquery()
        else:
            sub = (
                select(e.c.profile_id.label("profile_id"), value.label("value"))
                .where(*self.event_filter(node.events))
                .group_by(e.c.profile_id)
                .subquery(f"history_{len(self.joins)}")
            )
            self.joins.append((sub, sub.c.profile_id == PROFILES.c.id))
            found = sub.c.value
        # No events: a count or a sum of 0; min, max and avg have no value.
        if node.aggregate in ("count", "sum"):
            found = func.coalesce(found, 0)
        return self.column_test(found, node.test)

    def event_filter(self, events: EventFilter) -> list[ColumnElement[bool]]:
        e = EVENTS
        where: list[ColumnElement[bool]] = [e.c.profile_id.is_not(None)]
        if events.name is not None:
            where.append(e.c.name == events.name)
        else:  # "any event" means the person's, not the engine's own Segment Entered/Exited
            where.append(e.c.source != "cdp:segments")
        if events.type is not None:
            where.append(e.c.type == events.type)
        if events.within is not None:
            where.append(e.c.timestamp >= self._since(events.within))
        for item in events.where:
            where.append(self.json_test(JsonPath(self.dialect, e.c.payload, item.path), item.test))
        where.extend(self.in_scope(e.c.profile_id))
        return where

    # --- tests on values --------------------------------------------------------------------------

    def json_test(
        self, value: JsonPath, test: Predicate, default: float | None = None
    ) -> ColumnElement[bool]:
        op, operand = test.op, test.value
        if op == "exists":
            return value.present() if default is None else true()
        if op == "contains":
            if isinstance(operand, str):
                text = value.string()
                return or_(text.contains(operand, autoescape=True), value.list_contains(operand))
            return value.list_contains(operand)
        if op in ("within_last", "not_within_last"):
            since = self._iso_since(operand)
            text = value.string()
            if op == "within_last":
                return and_(text >= since, text <= self._iso_since(timedelta(0)))
            return text < since
        sample = operand[0] if isinstance(operand, list) else operand
        if isinstance(sample, bool):
            column: ColumnElement[Any] = value.boolean()
        elif isinstance(sample, int | float):
            column = value.number()
            if default is not None:
                column = func.coalesce(column, default)
        elif isinstance(sample, datetime):
            column = value.string()
            operand = [_iso(v) for v in operand] if isinstance(operand, list) else _iso(operand)
        else:
            column = value.string()
        return self.column_test(column, Predicate(op, operand))

    def column_test(self, column: ColumnElement[Any], test: Predicate) -> ColumnElement[bool]:
        op, operand = test.op, test.value
        if op == "exists":
            return column.is_not(None)
        if op == "=":
            return column == operand
        if op == "!=":
            return func.coalesce(column != operand, true())
        if op == "<":
            return column < operand
        if op == "<=":
            return column <= operand
        if op == ">":
            return column > operand
        if op == ">=":
            return column >= operand
        if op == "between":
            return column.between(operand[0], operand[1])
        if op == "in":
            return column.in_(operand)
        if op == "contains":
            return column.contains(operand, autoescape=True)
        raise AssertionError(f"operator {op} reached SQL unchecked")

    # Times relative to now: literal values for a statement run once, bound parameters named by
    # their distance from now for a statement prepared once and run many times (`relative`).

    def _since(self, delta: timedelta) -> Any:
        if not isinstance(self.scope, BindParameter):
            return self.now - delta
        seconds = int(delta.total_seconds())
        return bindparam(f"since_{seconds}", self.now - delta, type_=UTCDateTime())

    def _iso_since(self, delta: timedelta) -> Any:
        if not isinstance(self.scope, BindParameter):
            return _iso(self.now - delta)
        seconds = int(delta.total_seconds())
        return bindparam(f"iso_{seconds}", _text(self.now - delta), type_=String())


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], str)


def relative(names: Sequence[str], now: datetime) -> dict[str, Any]:
    """Values at `now` for the parameters `_since` and `_iso_since` name."""
    found: dict[str, Any] = {}
    for name in names:
        kind, _, seconds = name.rpartition("_")
        if kind == "since":
            found[name] = now - timedelta(seconds=int(seconds))
        elif kind == "iso":
            found[name] = _text(now - timedelta(seconds=int(seconds)))
    return found


def _text(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S")


def _iso(at: datetime) -> Any:
    """Datetime traits are ISO-8601 text; compared as UTC text (YYYY-MM-DDTHH:MM:SS)."""
    return literal(_text(at))
