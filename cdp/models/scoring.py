"""Writing scores: every profile in chunks (batch), or a few profiles whose scores are stale.

Batch scoring walks the live profiles in id order, a chunk at a time: one aggregate query builds
the chunk's features, the estimator scores them, and one upsert (on PostgreSQL: COPY into a
staging table, then INSERT … ON CONFLICT) writes the chunk in its own short transaction.
Memory holds one chunk whatever the number of profiles, and ingestion goes on between chunks
(on SQLite each chunk's write takes the write lock only briefly).

Scores land in `scores` (one row per profile and output name) with the version that wrote them
("churn@3") and when, which is what tells a stale score: another version than the active one,
or older than the model's `stale_after`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Column, Connection, MetaData, Table, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from threadpoolctl import threadpool_limits

from cdp.db.bulk import insert_rows
from cdp.db.models import ModelState, ModelVersion, Score, utcnow
from cdp.errors import UserError
from cdp.models import artefacts, store
from cdp.models.features import CHUNK, FeatureBuilder, count_profiles, profile_chunks
from cdp.models.registry import Model
from cdp.runtime import Runtime

log = logging.getLogger(__name__)
SCORES = Score.__table__
CACHE_KEY = "models.estimators"
CACHE_SIZE = 16


class NotTrained(UserError):
    """The model has no active version to score with."""


@dataclass(frozen=True)
class Active:
    """A model's active version, loaded and ready to score."""

    model: Model
    version: int
    label: str
    estimator: Any


@dataclass(frozen=True)
class ScoringSummary:
    model: str
    version: str
    profiles: int
    seconds: float

    def __str__(self) -> str:
        rate = self.profiles / self.seconds if self.seconds else 0.0
        return (
            f"scored {self.profiles:,} profiles with {self.version} in {self.seconds:.1f}s "
            f"({rate:,.0f} profiles/s)"
        )


Progress = Callable[[int, int], None]
"""Called after each chunk with (profiles scored, profiles in all)."""


def load_active(runtime: Runtime, model: Model) -> Active:
    """The active version's estimator: verified and parsed once per process and version."""
    with runtime.sessions() as session:
        row = store.active_version(session, model.name)
        if row is None:
            raise NotTrained(
                f"model {model.name!r} has no trained version yet: run `cdp models train "
                f"{model.name}` (or the trainModel mutation)"
            )
        cache: dict[tuple[str, int, str], Any] = runtime.caches.setdefault(CACHE_KEY, {})
        key = (model.name, row.version, row.artefact_sha256)
        estimator = cache.get(key)
        if estimator is None:
            data = session.scalar(select(ModelVersion.artefact).where(ModelVersion.id == row.id))
            assert data is not None
            estimator = artefacts.load(
                data,
                row.artefact_sha256,
                model.enricher.trusted_types,
                f"model {model.name!r} version {row.version}",
            )
            if len(cache) >= CACHE_SIZE:
                cache.pop(next(iter(cache)))
            cache[key] = estimator
    return Active(model, row.version, store.version_label(model.name, row.version), estimator)


def score_all(
    runtime: Runtime,
    model: Model,
    now: datetime | None = None,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> ScoringSummary:
    """Score every live profile with the model's active version."""
    began = time.monotonic()
    active = load_active(runtime, model)
    now = now or utcnow()
    builder = FeatureBuilder(runtime.engine.dialect.name, list(model.enricher.features()))
    done = 0
    with runtime.engine.connect() as conn:
        total = count_profiles(conn)
        conn.rollback()
        for ids in profile_chunks(conn, chunk):
            matrix, _ = builder.matrix(conn, ids, now)
            conn.rollback()  # end the read transaction: no snapshot held across the whole run
            rows = score_rows(active, ids, matrix, now)
            with runtime.writing() as session:
                upsert_scores(session.connection(), rows)
            done += len(ids)
            if progress is not None:
                progress(done, max(total, done))
    with runtime.writing() as session:
        store.record_scoring(session, model.name, active.version, done, utcnow())
    return ScoringSummary(model.name, active.label, done, time.monotonic() - began)


def refresh(
    runtime: Runtime,
    models: Sequence[Model],
    profile_ids: Sequence[str],
    now: datetime | None = None,
) -> int:
    """Score the profiles whose scores from `models` are missing or stale (on demand, e.g. when
    a profile is read); returns how many (profile, model) pairs were scored."""
    if not models or not profile_ids:
        return 0
    now = now or utcnow()
    ids = sorted(set(profile_ids))
    with runtime.sessions() as session:
        states = {
            s.model: s
            for s in session.scalars(
                select(ModelState).where(ModelState.model.in_([m.name for m in models]))
            )
        }
        names = [o.name for m in models for o in m.outputs]
        stored = {
            (row.profile_id, row.name): row
            for row in session.scalars(
                select(Score).where(Score.profile_id.in_(ids), Score.name.in_(names))
            )
        }
    scored = 0
    for model in models:
        state = states.get(model.name)
        if state is None or state.active_version is None:
            continue  # never trained: nothing to score with
        label = store.version_label(model.name, state.active_version)
        oldest = now - model.spec.stale_after
        stale = [
            pid
            for pid in ids
            if any(
                (row := stored.get((pid, output.name))) is None
                or row.model_version != label
                or row.scored_at < oldest
                for output in model.outputs
            )
        ]
        if not stale:
            continue
        active = load_active(runtime, model)
        builder = FeatureBuilder(runtime.engine.dialect.name, list(model.enricher.features()))
        with runtime.engine.connect() as conn:
            live = [pid for part in profile_chunks(conn, CHUNK, stale) for pid in part]
            if not live:
                continue
            matrix, _ = builder.matrix(conn, live, now, exact=True)
        rows = score_rows(active, live, matrix, now)
        with runtime.writing() as session:
            upsert_scores(session.connection(), rows)
        scored += len(live)
    return scored


def score_rows(
    active: Active, profile_ids: Sequence[str], matrix: np.ndarray, at: datetime
) -> list[dict[str, Any]]:
    """The `scores` rows for a chunk: one per profile and output."""
    # One thread: a chunk is small work for OpenMP, whose threads spin at every tree's
    # parallel region; on a busy host that costs more than the prediction itself.
    with threadpool_limits(1):
        values = active.model.enricher.score(active.estimator, matrix)
    rows: list[dict[str, Any]] = []
    for output in active.model.outputs:
        column = _column(values, output.name, len(profile_ids), active.model.name)
        for pid, value in zip(profile_ids, column, strict=True):
            if output.kind == "label":
                number, text = None, None if value is None else str(value)
            else:
                number = float(value)
                number, text = (None if np.isnan(number) else number), None
            rows.append(
                {
                    "profile_id": pid,
                    "name": output.name,
                    "value": number,
                    "label": text,
                    "model_version": active.label,
                    "scored_at": at,
                }
            )
    return rows


def _column(values: Mapping[str, Any], name: str, length: int, model: str) -> Sequence[Any]:
    column = values.get(name)
    if column is None or len(column) != length:
        raise ValueError(
            f"model {model!r}: the enricher's score() gave no column of {length} values for "
            f"its output {name!r}"
        )
    return list(column)


def upsert_scores(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or replace (profile, name) scores."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        # COPY into a session-local staging table, then one INSERT … SELECT … ON CONFLICT:
        # two to three times faster than an executemany of upserts for a chunk of thousands.
        conn.execute(text(STAGING_DDL))
        insert_rows(conn, STAGING, COLUMNS, [tuple(r[c] for c in COLUMNS) for r in rows])
        conn.execute(text(MERGE_STAGED))
        return
    statement = sqlite_insert(SCORES)
    statement = statement.on_conflict_do_update(
        index_elements=[SCORES.c.profile_id, SCORES.c.name],
        set_={c: statement.excluded[c] for c in COLUMNS[2:]},
    )
    conn.execute(statement, rows)


COLUMNS = ("profile_id", "name", "value", "label", "model_version", "scored_at")
STAGING = Table(
    "scores_staging",
    MetaData(),
    *(Column(c.name, c.type) for c in SCORES.columns),
    prefixes=["TEMPORARY"],
)
STAGING_DDL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS scores_staging (LIKE scores) ON COMMIT DELETE ROWS"
)
MERGE_STAGED = """
INSERT INTO scores (profile_id, name, value, label, model_version, scored_at)
SELECT profile_id, name, value, label, model_version, scored_at FROM scores_staging
ON CONFLICT (profile_id, name) DO UPDATE SET value = excluded.value, label = excluded.label,
    model_version = excluded.model_version, scored_at = excluded.scored_at
"""
