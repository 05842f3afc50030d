"""What the CLI, GraphQL, the scheduler and other layers do with models: train, score, roll
back, and read a profile's fresh scores (listing is in `cdp.models.catalog`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import numpy as np
import sklearn
from sqlalchemy import select

from cdp.db.models import ModelVersion, Score, utcnow
from cdp.models import artefacts, scoring, store
from cdp.models.catalog import Overview, configured, get_model, overview
from cdp.models.features import CHUNK
from cdp.models.registry import Model
from cdp.models.scoring import ScoringSummary
from cdp.models.training import build_training_set, fit_and_evaluate
from cdp.runtime import Runtime

__all__ = [
    "Overview", "code_version", "configured", "get_model", "overview", "profile_scores",
    "refresh_quietly", "refresh_scores", "rollback", "score", "train",
]  # fmt: skip
log = logging.getLogger(__name__)


def train(
    runtime: Runtime,
    name: str,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> ModelVersion:
    """Build the training set, fit, evaluate on the held-out split, store the new version and
    make it active. Raises TooLittleData (naming what is needed) before fitting anything."""
    model = get_model(runtime, name)
    began = time.monotonic()
    with runtime.engine.connect() as conn:
        data = build_training_set(conn, model, now or utcnow(), CHUNK, progress)
    built = time.monotonic()
    estimator, metrics = fit_and_evaluate(model, data)
    dumped = time.monotonic()
    blob, digest = artefacts.dump(estimator)
    metrics["seconds"] = {
        "features": round(built - began, 3),
        **metrics["seconds"],
        "artefact": round(time.monotonic() - dumped, 3),
    }
    enricher = model.enricher
    with runtime.writing() as session:
        row = store.save_version(
            session,
            model.name,
            type=model.spec.type,
            task=enricher.task,
            outputs=[{"name": o.name, "kind": o.kind} for o in model.outputs],
            features=[f.name for f in enricher.features()],
            options=enricher.options.model_dump(mode="json"),
            metrics=metrics,
            cutoff=data.cutoff,
            feature_start=data.feature_start,
            label_end=data.label_end,
            code_version=code_version(runtime, model),
            artefact=blob,
            artefact_format=artefacts.FORMAT,
            artefact_sha256=digest,
            trained_at=utcnow(),
            training_seconds=round(time.monotonic() - began, 3),
        )
    return row


def score(
    runtime: Runtime,
    name: str,
    now: datetime | None = None,
    progress: scoring.Progress | None = None,
    chunk: int = CHUNK,
) -> ScoringSummary:
    """Score every live profile with the model's active version."""
    return scoring.score_all(runtime, get_model(runtime, name), now, chunk, progress)


def rollback(runtime: Runtime, name: str, version: int) -> ModelVersion:
    """Make an earlier (or any stored) version the active one. Profiles' scores follow as they
    are rescored: at once for profiles read (their scores are stale), in bulk at the next
    `cdp models score` or scheduled run."""
    model = get_model(runtime, name)
    with runtime.writing() as session:
        return store.activate(session, model.name, version)


def refresh_scores(
    runtime: Runtime, profile_ids: Sequence[str], now: datetime | None = None
) -> int:
    """Score on demand the profiles whose scores are missing or stale."""
    return scoring.refresh(runtime, configured(runtime), profile_ids, now)


def refresh_quietly(runtime: Runtime, profile_ids: Sequence[str]) -> None:
    """`refresh_scores` for readers (GraphQL `Profile.scores`): a failure (a model without a
    trained version is no failure) is logged, and the stored scores are served."""
    try:
        refresh_scores(runtime, profile_ids)
    except Exception:
        log.exception("on-demand scoring of %d profiles failed", len(profile_ids))


def profile_scores(runtime: Runtime, profile_id: str) -> dict[str, float | str | None]:
    """A profile's scores by name, refreshed first where stale: what decision strategies read
    (a label's value is its text)."""
    refresh_scores(runtime, [profile_id])
    with runtime.sessions() as session:
        rows = session.scalars(select(Score).where(Score.profile_id == profile_id))
        return {row.name: row.label if row.label is not None else row.value for row in rows}


def code_version(runtime: Runtime, model: Model) -> str:
    """What code trained a version: the server, the enricher's plugin and class, the libraries."""
    plugin = runtime.plugins.components["enricher"][model.spec.type][1]
    info = runtime.plugins.plugins.get(plugin)
    try:
        server = package_version("cdp-server")
    except PackageNotFoundError:  # running from a checkout that is not installed
        server = "unknown"
    parts = [
        f"cdp-server {server}",
        f"plugin {plugin} {info.version if info and info.version else ''}".rstrip(),
        f"enricher {model.spec.type} v{model.enricher.version}",
        f"scikit-learn {sklearn.__version__}",
        f"numpy {np.__version__}",
    ]
    return "; ".join(parts)[:255]
