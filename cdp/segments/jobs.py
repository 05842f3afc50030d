"""The scheduled work of segments: the sweep (what time alone changes) and the bulk recompute."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select

from cdp.db.models import Segment, utcnow
from cdp.runtime import Runtime
from cdp.scheduler import Job, Schedule
from cdp.segments import service


def segment_jobs(runtime: Runtime) -> list[Job]:
    settings = runtime.config.segments
    swept = [utcnow()]  # the first sweep comes one interval after start, not at once

    def sweep(_: object) -> None:
        swept[0] = utcnow()
        service.sweep(runtime)

    return [
        Job(
            "segments:sweep",
            Schedule.parse(f"every {settings.sweep_seconds}s"),
            sweep,
            lambda: swept[0],
        ),
        Job(
            "segments:recompute",
            Schedule.parse(f"every {settings.recompute_seconds}s"),
            lambda _: service.recompute(runtime),
            _last_recompute(runtime, utcnow()),
        ),
    ]


def _last_recompute(runtime: Runtime, started: datetime) -> Callable[[], datetime]:
    """The oldest bulk recompute of a segment, so that a restart does not recompute everything
    at once; without segments, the process's start."""

    def last_run() -> datetime:
        with runtime.sessions() as session:
            oldest = session.scalar(select(func.min(Segment.computed_at)))
        return oldest or started

    return last_run
