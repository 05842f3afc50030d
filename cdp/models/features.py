"""Feature matrices and labels, computed in the database.

Each call aggregates the events of one chunk of profiles (a range of profile ids, which the
`(profile_id, timestamp)` index serves) in one `GROUP BY profile_id` query: every feature is a
conditional aggregate (`count(CASE WHEN … THEN 1 END)`), so the events are read once whatever the
number of features, and no event ever reaches Python.

The time split is structural: the features query reads only `timestamp < cutoff` (and, with a
lookback, `>= start`); the label query reads only `cutoff <= timestamp < end`. No other query
builds either, so no label can leak into a feature.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    ARRAY,
    Connection,
    DateTime,
    Float,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    extract,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ColumnElement

from cdp.db.models import Event, Profile
from cdp.models.spec import Events, Feature, Scalar, Target
from cdp.segments.jsonsql import JsonPath

EVENTS = Event.__table__
PROFILES = Profile.__table__
CHUNK = 5000
"""Profiles per chunk: a chunk's matrix and its score rows are what scoring holds in memory."""


def lookback_start(features: Sequence[Feature], cutoff: datetime) -> datetime | None:
    """The oldest event any feature reads: `cutoff` minus the longest window, or None (all
    history) when a feature has no window."""
    windows = [f.within for f in features]
    if not windows or any(w is None for w in windows):
        return None
    return cutoff - max(w for w in windows if w is not None)


def profile_chunks(
    conn: Connection, size: int = CHUNK, ids: Sequence[str] | None = None
) -> Iterator[list[str]]:
    """The live profiles' ids, in id order, `size` at a time (keyset pagination: each page is
    an index range scan, however deep); only `ids` when given."""
    if ids is not None:
        wanted = sorted(set(ids))
        for at in range(0, len(wanted), size):
            part = wanted[at : at + size]
            yield list(
                conn.scalars(
                    select(PROFILES.c.id)
                    .where(PROFILES.c.id.in_(part), PROFILES.c.merged_into.is_(None))
                    .order_by(PROFILES.c.id)
                )
            )
        return
    after: str | None = None
    while True:
        query = select(PROFILES.c.id).where(PROFILES.c.merged_into.is_(None))
        if after is not None:
            query = query.where(PROFILES.c.id > after)
        page = list(conn.scalars(query.order_by(PROFILES.c.id).limit(size)))
        if not page:
            return
        yield page
        after = page[-1]


def count_profiles(conn: Connection) -> int:
    return conn.scalar(select(func.count()).where(PROFILES.c.merged_into.is_(None))) or 0


@dataclass
class FeatureBuilder:
    """Compiles an enricher's features for one dialect; `matrix` runs them for a chunk."""

    dialect: str
    features: Sequence[Feature]

    def matrix(
        self, conn: Connection, profile_ids: Sequence[str], cutoff: datetime, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(features, events) for `profile_ids` (sorted, one chunk) as of `cutoff`: the float
        matrix, one row per profile in order, and how many events each had in the lookback
        (what decides whether a profile belongs in the training population).

        A chunk of `profile_chunks` holds every live profile between its first and last id, so
        its events are read as one index range; `exact`: any ids (on demand), read by id."""
        start = lookback_start(self.features, cutoff)
        columns = [self._column(f, cutoff) for f in self.features]
        where = [EVENTS.c.timestamp < cutoff]
        if start is not None:
            where.append(EVENTS.c.timestamp >= start)
        query = self._grouped(profile_ids, where, [func.count().label("n"), *columns], exact)
        out = np.array([f.default() for f in self.features], dtype=np.float64)
        out = np.tile(out, (len(profile_ids), 1))
        seen = np.zeros(len(profile_ids), dtype=np.int64)
        position = {pid: i for i, pid in enumerate(profile_ids)}
        for row in conn.execute(query):
            i = position.get(row[0])
            if i is None:  # a profile id inside the range that is not live
                continue
            seen[i] = row[1]
            for j, value in enumerate(row[2:]):
                if value is not None:
                    out[i, j] = value
        return out, seen

    def labels(
        self, conn: Connection, profile_ids: Sequence[str], target: Target, cutoff: datetime
    ) -> np.ndarray:
        """The target for `profile_ids` from the events in [cutoff, cutoff + horizon)."""
        end = cutoff + target.horizon
        where = [EVENTS.c.timestamp >= cutoff, EVENTS.c.timestamp < end]
        if target.aggregate == "sum":
            assert target.property is not None
            value: ColumnElement[Any] = func.sum(
                case((self._matches(target.events), self._number(target.property)))
            )
        else:
            value = func.count(case((self._matches(target.events), 1)))
        found = np.zeros(len(profile_ids), dtype=np.float64)
        position = {pid: i for i, pid in enumerate(profile_ids)}
        for pid, got in conn.execute(self._grouped(profile_ids, where, [value])):
            if pid in position and got is not None:
                found[position[pid]] = got
        if target.aggregate == "any":
            return (found > 0).astype(np.int64)
        if target.aggregate == "none":
            return (found == 0).astype(np.int64)
        return found

    # --- SQL ------------------------------------------------------------------------------------

    def _grouped(
        self,
        profile_ids: Sequence[str],
        where: list[ColumnElement[bool]],
        values: list[ColumnElement[Any]],
        exact: bool = False,
    ) -> Select[Any]:
        if exact or len(profile_ids) <= 100:
            scope = EVENTS.c.profile_id.in_(profile_ids)
        else:  # a chunk: one index range
            scope = and_(
                EVENTS.c.profile_id >= profile_ids[0], EVENTS.c.profile_id <= profile_ids[-1]
            )
        return (
            select(EVENTS.c.profile_id, *values).where(scope, *where).group_by(EVENTS.c.profile_id)
        )

    def _column(self, feature: Feature, cutoff: datetime) -> ColumnElement[Any]:
        cond = self._matches(feature.events)
        if feature.within is not None:
            cond = and_(cond, EVENTS.c.timestamp >= cutoff - feature.within)
        ts = EVENTS.c.timestamp
        agg = feature.aggregate
        if agg == "count":
            return func.count(case((cond, 1)))
        if agg in ("sum", "avg", "min", "max"):
            assert feature.property is not None
            return getattr(func, agg)(case((cond, self._number(feature.property))))
        if agg == "active_days":
            return func.count(func.distinct(case((cond, self._day(ts)))))
        newest = func.max(case((cond, ts))) if agg == "days_since_last" else None
        at = newest if newest is not None else func.min(case((cond, ts)))
        return self._days_between(at, cutoff)

    def _matches(self, events: Events) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = []
        if events.names:
            parts.append(EVENTS.c.name.in_(events.names))
        if events.types:
            parts.append(EVENTS.c.type.in_(events.types))
        for path, value in sorted(events.where.items()):
            if "[]" in path:
                parts.append(self._array_has(path, value))
                continue
            json = JsonPath(self.dialect, EVENTS.c.payload, tuple(path.split(".")))
            if isinstance(value, bool):
                parts.append(json.boolean() == value)
            elif isinstance(value, int | float):
                parts.append(json.number() == value)
            else:
                parts.append(json.string() == value)
        return and_(true(), *parts)

    def _array_has(self, path: str, value: Scalar) -> ColumnElement[bool]:
        """ "properties.products[].category" = "shoes": an item of the array has it (an order's
        line items); "properties.tags[]" = "vip": the array holds the value."""
        array, _, item = path.partition("[]")
        steps = tuple(array.split("."))
        inner = tuple(p for p in item.split(".") if p)
        if self.dialect == "postgresql":
            wanted: Any = value
            for step in reversed(inner):
                wanted = {step: wanted}
            at = EVENTS.c.payload.op("#>", return_type=JSONB)(
                bindparam(None, list(steps), type_=ARRAY(Text))
            )
            return and_(
                func.jsonb_typeof(at) == "array",
                at.op("@>")(bindparam(None, [wanted], type_=JSONB)),
            )
        json_path = "$" + "".join(f'."{p}"' for p in steps)
        items = func.json_each(EVENTS.c.payload, json_path).table_valued("value")
        found = items.c.value
        if inner:
            found = func.json_extract(found, "$" + "".join(f'."{p}"' for p in inner))
        return and_(
            func.json_type(EVENTS.c.payload, json_path) == "array",
            exists(select(1).select_from(items).where(found == value)),
        )

    def _number(self, path: str) -> ColumnElement[float]:
        return JsonPath(self.dialect, EVENTS.c.payload, tuple(path.split("."))).number()

    def _day(self, ts: ColumnElement[datetime]) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return func.date_trunc("day", func.timezone("UTC", ts))
        return func.substr(ts, 1, 10)  # stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC)

    def _days_between(self, at: ColumnElement[Any], cutoff: datetime) -> ColumnElement[float]:
        if self.dialect == "postgresql":
            moment = literal(cutoff, DateTime(timezone=True))
            return cast(extract("epoch", moment - at), Float) / 86400.0
        text = cutoff.astimezone(UTC).isoformat(" ", "microseconds")[:26]
        return func.julianday(text) - func.julianday(at)
