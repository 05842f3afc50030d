"""The scheduled work of models: for each `[[models]]` entry with a `schedule`, train a new
version, then score every profile with the active one.

Due-ness comes from the model's `last_run_at`, which a run claims first under the model's row
lock: of several processes that find the job due at once, one runs it and the others see it is
no longer due. Too little data to train is logged, and the active version (if any) still
scores, so that new profiles get scores and old ones are refreshed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from cdp.db.models import ModelState, utcnow
from cdp.errors import UserError
from cdp.models import catalog, store
from cdp.runtime import Runtime
from cdp.scheduler import Interrupted, Job, Schedule

log = logging.getLogger(__name__)


def model_jobs(runtime: Runtime) -> list[Job]:
    return [
        Job(
            f"model:{model.name}",
            Schedule.parse(model.spec.schedule),
            _train_and_score(runtime, model.name, Schedule.parse(model.spec.schedule)),
            _last_run(runtime, model.name),
        )
        for model in catalog.configured(runtime)
        if model.spec.schedule
    ]


def claim_run(runtime: Runtime, name: str, schedule: Schedule, now: datetime) -> bool:
    """Record that this process starts the due run; False when another process already has."""
    with runtime.writing() as session:
        state = store.locked_state(session, name)
        if state.last_run_at is not None and schedule.next_after(state.last_run_at) > now:
            return False
        state.last_run_at = now
        return True


def _train_and_score(
    runtime: Runtime, name: str, schedule: Schedule
) -> Callable[[threading.Event], None]:
    def run(stopping: threading.Event) -> None:
        from cdp.models import service  # scikit-learn: imported when a model job first runs

        if not claim_run(runtime, name, schedule, utcnow()):
            log.info("model %s: another process runs this schedule", name)
            return
        try:
            version = service.train(runtime, name)
            log.info("model %s: trained version %d %s", name, version.version, version.metrics)
        except UserError as exc:  # too little data yet: keep scoring with what is active
            log.warning("model %s: not trained: %s", name, exc)
        if stopping.is_set():
            return

        def between_chunks(_done: int, _total: int) -> None:
            if stopping.is_set():  # the chunks so far are committed
                raise Interrupted("shutting down; the next run scores every profile again")

        try:
            log.info("model %s: %s", name, service.score(runtime, name, progress=between_chunks))
        except Interrupted:
            log.info("model %s: scoring interrupted by shutdown", name)
        except UserError as exc:  # never trained
            log.warning("model %s: not scored: %s", name, exc)

    return run


def _last_run(runtime: Runtime, name: str) -> Callable[[], datetime | None]:
    def last_run() -> datetime | None:
        with runtime.sessions() as session:
            state = session.get(ModelState, name)
        return state.last_run_at if state else None

    return last_run
