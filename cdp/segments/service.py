"""What admins and schedules do with segments and computed traits, each in its own transaction:
save or delete a definition (and recompute what it changes), preview, recompute, sweep.

Writes hold the identity lock, like ingestion, so a bulk recompute and the incremental updates
of an ingestion never interleave; plugins and subscribers hear of changes once committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdp.db.models import ComputedTrait, Segment, utcnow
from cdp.identity.merge import lock_identity
from cdp.ingest.pipeline import notify_memberships
from cdp.runtime import Runtime
from cdp.segments import definitions
from cdp.segments.compiler import Compiler
from cdp.segments.conditions import ConditionError, parse
from cdp.segments.engine import Evaluator
from cdp.segments.membership import Change
from cdp.segments.storable import check_storable

T = TypeVar("T")
MAX_SAMPLE = 100


@dataclass(frozen=True)
class Preview:
    size: int
    sample: list[str]
    """Ids of up to `sample` members, oldest profiles first."""


def _write(runtime: Runtime, work: Callable[[Session, Evaluator], tuple[T, list[Change]]]) -> T:
    with runtime.writing() as session:
        lock_identity(session)
        result, changes = work(session, Evaluator())
    notify_memberships(runtime, changes)
    return result


def upsert_segment(
    runtime: Runtime, key: str, definition: Any, name: str | None = None, description: str = ""
) -> Segment:
    """Save (validated) and recompute the segment and the segments that refer to it."""
    check_storable(definition)

    def work(session: Session, evaluator: Evaluator) -> tuple[Segment, list[Change]]:
        row = definitions.save_segment(session, runtime.config, key, definition, name, description)
        changes = evaluator.recompute(session.connection(), utcnow(), [key], [])
        return row, changes

    return _write(runtime, work)


def delete_segment(runtime: Runtime, key: str) -> None:
    _write(runtime, lambda session, _: (definitions.delete_segment(session, key), []))


def upsert_computed(runtime: Runtime, key: str, definition: Any) -> ComputedTrait:
    """Save (validated), recompute its values, then the segments that read it."""
    check_storable(definition)

    def work(session: Session, evaluator: Evaluator) -> tuple[ComputedTrait, list[Change]]:
        row = definitions.save_computed(session, key, definition)
        conn = session.connection()
        readers = [k for k, d in evaluator.definitions(conn).segments.items() if key in d.computed]
        return row, evaluator.recompute(conn, utcnow(), readers, [key])

    return _write(runtime, work)


def delete_computed(runtime: Runtime, key: str) -> None:
    _write(runtime, lambda session, _: (definitions.delete_computed(session, key), []))


def recompute(runtime: Runtime, segments: Sequence[str] | None = None) -> list[Change]:
    """Every computed trait and the given segments (None: all), for every profile."""

    def work(session: Session, evaluator: Evaluator) -> tuple[list[Change], list[Change]]:
        conn = session.connection()
        known = evaluator.definitions(conn).segments
        for key in segments or ():
            if key not in known:
                raise ConditionError("keys", f"no segment has the key {key!r}")
        changes = evaluator.recompute(conn, utcnow(), segments)
        return changes, changes

    return _write(runtime, work)


def sweep(runtime: Runtime) -> list[Change]:
    """Re-evaluate what time alone can change (windows, relative dates)."""

    def work(session: Session, evaluator: Evaluator) -> tuple[list[Change], list[Change]]:
        changes = evaluator.sweep(session.connection(), utcnow())
        return changes, changes

    return _write(runtime, work)


def preview(runtime: Runtime, definition: Any, sample: int = 10) -> Preview:
    """The size and some members of a definition, without saving anything."""
    if not 0 <= sample <= MAX_SAMPLE:
        raise ConditionError("sample", f"between 0 and {MAX_SAMPLE}")
    check_storable(definition)
    with runtime.sessions() as session:
        condition = parse(definition, definitions.catalog(session, runtime.config))
        defs = definitions.load(session)
        compiler = Compiler(session.get_bind().dialect.name, utcnow(), None, defs.aggregates)
        members = compiler.members(condition).subquery()
        size = session.scalar(select(func.count()).select_from(members)) or 0
        ids = list(session.scalars(select(members.c.id).order_by(members.c.id).limit(sample)))
    return Preview(size, ids)
