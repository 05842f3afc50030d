"""Trained versions in the database, and each model's active version.

Versions are numbered 1, 2, … per model. Saving one locks the model's state row first (a row
lock on PostgreSQL; SQLite writers hold the database's write lock), so two trainings that end
at once get different numbers. A new version becomes the active one; `activate` switches back
(rollback) or forward to any stored version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, defer

from cdp.db.models import ModelState, ModelVersion, utcnow
from cdp.errors import NotFoundError


def locked_state(session: Session, model: str) -> ModelState:
    """The model's state row, created if missing, locked until the transaction ends."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # Insert-or-nothing first: two first trainings of a model must not both try to create it.
    session.execute(insert(ModelState).values(model=model).on_conflict_do_nothing())
    found = session.get(ModelState, model, with_for_update=True, populate_existing=True)
    assert found is not None
    return found


def save_version(session: Session, model: str, **fields: Any) -> ModelVersion:
    """Store a trained version under the next number and make it active."""
    current = locked_state(session, model)
    number = (
        session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model == model))
        or 0
    ) + 1
    row = ModelVersion(model=model, version=number, **fields)
    session.add(row)
    current.active_version = number
    current.activated_at = utcnow()
    session.flush()
    return row


def activate(session: Session, model: str, version: int) -> ModelVersion:
    """Make a stored version the active one (a rollback, or forward again)."""
    current = locked_state(session, model)
    row = get_version(session, model, version)
    current.active_version = version
    current.activated_at = utcnow()
    return row


def get_version(session: Session, model: str, version: int, artefact: bool = False) -> ModelVersion:
    query = select(ModelVersion).where(ModelVersion.model == model, ModelVersion.version == version)
    if not artefact:
        query = query.options(defer(ModelVersion.artefact))
    row = session.scalar(query)
    if row is None:
        known = ", ".join(str(v.version) for v in versions(session, model)) or "none yet"
        raise NotFoundError(f"model {model!r} has no version {version} (versions: {known})")
    return row


def active_version(session: Session, model: str, artefact: bool = False) -> ModelVersion | None:
    found = session.get(ModelState, model)
    if found is None or found.active_version is None:
        return None
    return get_version(session, model, found.active_version, artefact)


def versions(session: Session, model: str | None = None) -> list[ModelVersion]:
    """Every stored version (of one model, or of all), oldest first, without the artefacts."""
    query = select(ModelVersion).options(defer(ModelVersion.artefact))
    if model is not None:
        query = query.where(ModelVersion.model == model)
    return list(session.scalars(query.order_by(ModelVersion.model, ModelVersion.version)))


def states(session: Session) -> dict[str, ModelState]:
    return {row.model: row for row in session.scalars(select(ModelState))}


def record_scoring(session: Session, model: str, version: int, profiles: int, at: datetime) -> None:
    current = locked_state(session, model)
    current.scored_at = at
    current.scored_version = version
    current.scored_profiles = profiles


def version_label(model: str, version: int) -> str:
    """What scores record as their `model_version`: "churn@3"."""
    return f"{model}@{version}"
