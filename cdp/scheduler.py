"""Running jobs on schedules: source syncs now; segment recomputes, training and sending later.

One `Scheduler` per process (in `cdp serve` when `scheduler.in_server`, or in `cdp worker`) looks
for due jobs every tick and runs each in a thread of its own, so a slow job never holds up the
others. Due-ness is read from durable state where a job has it (a source's `last_run_at`), so a
restart does not re-run everything, and every process sees the others' runs. What keeps two
processes from running one job at once is the job's own claim (a source's claim): the scheduler
only decides when to try.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from croniter import CroniterBadDateError, croniter

from cdp.db.models import SourceState, utcnow
from cdp.errors import CDPError
from cdp.runtime import Runtime
from cdp.sources.claim import SourceBusy, is_stale

if TYPE_CHECKING:
    from cdp.sources.spec import Source

log = logging.getLogger(__name__)

_EVERY = re.compile(r"^every\s+(\d+)\s*([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LONGEST = timedelta(days=366)
SCHEDULE_HELP = 'write "every N s|m|h|d" (e.g. "every 1h") or 5 cron fields (e.g. "*/15 * * * *")'


@dataclass(frozen=True)
class Schedule:
    """When a job is due: every fixed interval after its last run, or at cron times (UTC)."""

    text: str
    interval: timedelta | None = None
    cron: str | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Read "every 90s" / "every 5m" / "every 1h" / "every 1d", or 5 cron fields; raises
        ValueError saying what is wrong."""
        text = text.strip()
        match = _EVERY.match(text)
        if match is not None:
            interval = timedelta(seconds=int(match[1]) * _UNIT[match[2]])
            if not timedelta(0) < interval <= _LONGEST:
                raise ValueError(f"{text!r}: the interval must be from 1s to 366d")
            return cls(text, interval=interval)
        if text.startswith("every") or len(text.split()) != 5:
            raise ValueError(f"{text!r} is not a schedule: {SCHEDULE_HELP}")
        try:  # computing one time also refuses dates that never come ("0 0 30 2 *")
            croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"{text!r}: no such time ever comes") from None
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid cron expression ({exc})") from None
        return cls(text, cron=text)

    def next_after(self, when: datetime) -> datetime:
        """The first due time strictly after `when` (an aware datetime); in UTC."""
        when = when.astimezone(UTC)
        if self.interval is not None:
            return when + self.interval
        assert self.cron is not None
        return croniter(self.cron, when).get_next(datetime).astimezone(UTC)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Job:
    name: str
    """Unique among the jobs, e.g. "source:crm"; logs name the job by it."""
    schedule: Schedule
    run: Callable[[threading.Event], object]
    """Does the work; the event is set when the process shuts down: a long job checks it between
    steps and returns early. A job another process is running should return, not raise."""
    last_run: Callable[[], datetime | None] | None = None
    """When it last started, from durable state (None: never, so due now). Without it the
    scheduler remembers runs in memory, and a new process runs the job at once."""

    def next_due(self, last_run: datetime | None, now: datetime) -> datetime:
        return now if last_run is None else self.schedule.next_after(last_run)


class Scheduler:
    def __init__(
        self,
        jobs: Sequence[Job],
        tick: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"two jobs share a name: {names}")
        self.jobs = list(jobs)
        self.tick = tick
        self.clock = clock
        self.stopping = threading.Event()
        self.failures: list[str] = []
        """Names of the jobs that raised, in order (for `cdp worker --once`'s exit status)."""
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._started: dict[str, datetime] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Check for due jobs every tick in a background thread, until `stop`."""
        if self.jobs and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cdp-scheduler", daemon=True)
            self._thread.start()

    def stop(self, grace: float = 10.0) -> None:
        """Stop starting jobs, tell running ones to stop, and wait up to `grace` seconds."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self.wait(grace):
            # Their threads are daemons: the process may exit; a sync resumes from its checkpoint.
            log.warning("jobs still running at shutdown: %s", ", ".join(self.running()))

    def run_pending(self) -> list[str]:
        """Start every due job that is not already running in this process; returns their
        names."""
        started: list[str] = []
        for job in self.jobs:
            if self.stopping.is_set():
                break
            with self._lock:
                if job.name in self._running:
                    continue
            try:
                now = self.clock()
                last = job.last_run() if job.last_run else self._started.get(job.name)
                due = job.next_due(last, now) <= now
            except Exception:  # e.g. the database is away: try again next tick
                log.exception("cannot tell whether job %s is due", job.name)
                continue
            if due:
                self._launch(job, now)
                started.append(job.name)
        return started

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running jobs to end; False if some still run after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._running.values())
            if not threads:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            threads[0].join(left)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.run_pending()
            except Exception:  # never let the scheduler die; run_pending already logs per job
                log.exception("the scheduler's tick failed")
            self.stopping.wait(self.tick)

    def _launch(self, job: Job, now: datetime) -> None:
        thread = threading.Thread(
            target=self._run, args=(job,), name=f"job-{job.name}", daemon=True
        )
        with self._lock:
            self._running[job.name] = thread
            self._started[job.name] = now
        thread.start()

    def _run(self, job: Job) -> None:
        log.info("job %s started", job.name)
        began = time.monotonic()
        try:
            job.run(self.stopping)
        except Exception:
            log.exception("job %s failed", job.name)
            self.failures.append(job.name)
        else:
            log.info("job %s finished in %.1fs", job.name, time.monotonic() - began)
        finally:
            with self._lock:
                del self._running[job.name]


# --- what is scheduled ---------------------------------------------------------------------------


class Interrupted(CDPError):
    """A job stopped early because the process is shutting down."""


_INTERRUPTED = f"{Interrupted.__name__}:"
"""How a sync's `last_error` starts when a shutdown stopped it (see `claim.release`)."""

JobFactory = Callable[[Runtime], Iterable[Job]]


def source_jobs(runtime: Runtime) -> list[Job]:
    """A sync job for every `[[sources]]` entry with a `schedule`."""
    # Imported here: cdp.sources.spec imports Schedule from this module.
    from cdp.sources.spec import load_sources

    return [
        Job(
            f"source:{source.name}",
            Schedule.parse(source.spec.schedule),
            _sync(runtime, source),
            _source_last_run(runtime, source.name),
        )
        for source in load_sources(runtime.config, runtime.plugins)
        if source.spec.schedule
    ]


JOB_FACTORIES: list[str] = [
    "cdp.scheduler:source_jobs",
    "cdp.segments.jobs:segment_jobs",
    "cdp.models.jobs:model_jobs",
]
"""One "module:function" (a `JobFactory`) per module with scheduled work. Imported when jobs
are collected, so those modules may import this one."""


def scheduled_jobs(runtime: Runtime, factories: Sequence[JobFactory] | None = None) -> list[Job]:
    """Every job the runtime's config asks for (from `JOB_FACTORIES` unless given)."""
    if factories is None:
        factories = [_factory(ref) for ref in JOB_FACTORIES]
    return [job for factory in factories for job in factory(runtime)]


def _factory(ref: str) -> JobFactory:
    module, _, name = ref.partition(":")
    factory: JobFactory = getattr(importlib.import_module(module), name)
    return factory


def _sync(runtime: Runtime, source: Source) -> Callable[[threading.Event], None]:
    from cdp.sources.sync import SyncProgress, run_sync

    def run(stopping: threading.Event) -> None:
        def between_batches(_: SyncProgress) -> None:
            if stopping.is_set():  # the batch is committed: the next run resumes after it
                raise Interrupted("shutting down; the next run resumes from the checkpoint")

        try:
            summary = run_sync(runtime, source, between_batches)
        except SourceBusy as exc:  # another process runs it: that is the point of the claim
            log.info("skipped: %s", exc)
        except Interrupted:
            log.info("sync of source %r interrupted by shutdown", source.name)
        else:
            log.info("synced %s", summary)

    return run


def _source_last_run(runtime: Runtime, name: str) -> Callable[[], datetime | None]:
    def last_run() -> datetime | None:
        with runtime.sessions() as session:
            state = session.get(SourceState, name)
        if state is None:
            return None
        if state.running_since is not None and is_stale(state, utcnow()):
            return None  # its sync was killed: resume it now, not a whole interval later
        if state.status == "failed" and (state.last_error or "").startswith(_INTERRUPTED):
            return None  # stopped by a shutdown: likewise
        return state.last_run_at

    return last_run
