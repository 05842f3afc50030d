from __future__ import annotations

import logging
import threading
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import make_config
from servers import wait_until
from source_helpers import entry, events, started, state
from sqlalchemy import update
from starlette.testclient import TestClient

import cdp.scheduler as scheduler_module
from cdp.app import create_app
from cdp.components import RecordBatch, SourceConnector
from cdp.config import Config, PluginsConfig, SchedulerConfig
from cdp.db.models import SourceState, utcnow
from cdp.errors import ConfigError
from cdp.hookspecs import hookimpl
from cdp.plugins import PluginHost
from cdp.runtime import Runtime
from cdp.scheduler import Job, Schedule, Scheduler, scheduled_jobs, source_jobs
from cdp.sources.spec import load_sources

T0 = datetime(2026, 3, 6, 10, 7, tzinfo=UTC)  # a Friday


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def write_crm(tmp_path, rows: int = 2) -> str:
    path = tmp_path / "crm.csv"
    lines = [f"{i},user{i}@example.com,First {i},yes" for i in range(1, rows + 1)]
    path.write_text("Id,Email,First,Newsletter\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def set_last_run(runtime: Runtime, name: str, ago: timedelta) -> None:
    with runtime.transaction() as session:
        session.execute(
            update(SourceState).where(SourceState.name == name).values(last_run_at=utcnow() - ago)
        )


# --- Schedule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("every 90s", timedelta(seconds=90)),
        ("every 5m", timedelta(minutes=5)),
        ("every 1h", timedelta(hours=1)),
        ("every 1d", timedelta(days=1)),
        ("every 2 h", timedelta(hours=2)),
    ],
)
def test_every_is_an_interval_after_the_last_run(text, interval):
    schedule = Schedule.parse(text)
    assert (schedule.interval, schedule.cron, str(schedule)) == (interval, None, text)
    assert schedule.next_after(T0) == T0 + interval
    berlin = T0.astimezone(timezone(timedelta(hours=1)))
    assert schedule.next_after(berlin) == T0 + interval
    assert schedule.next_after(berlin).tzinfo == UTC


def test_cron_is_the_next_matching_minute_in_utc():
    quarter = Schedule.parse("*/15 * * * *")
    assert quarter.cron == "*/15 * * * *" and quarter.interval is None
    assert quarter.next_after(T0) == T0.replace(minute=15)
    assert quarter.next_after(T0.replace(minute=15)) == T0.replace(minute=30)  # strictly after
    monday = Schedule.parse("0 3 * * mon").next_after(T0)
    assert monday == datetime(2026, 3, 9, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hourly", "'hourly' is not a schedule: write \"every N s|m|h|d\""),
        ("every 5 weeks", "'every 5 weeks' is not a schedule"),
        ("every 0s", "'every 0s': the interval must be from 1s to 366d"),
        ("every 400d", "'every 400d': the interval must be from 1s to 366d"),
        ("* * * *", "'* * * *' is not a schedule"),
        ("0 0 * * * *", "'0 0 * * * *' is not a schedule"),  # 6 fields (seconds) are not cron's 5
        ("61 * * * *", "'61 * * * *' is not a valid cron expression"),
        ("0 0 30 2 *", "'0 0 30 2 *': no such time ever comes"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_key_and_the_source(text, problem):
    mapping = {"identifiers": {"email": "Email"}}
    config = Config(sources=[entry(path="a.csv", mapping=mapping, schedule=text)])
    with pytest.raises(ConfigError) as info:
        load_sources(config, PluginHost(PluginsConfig()))
    message = str(info.value)
    assert message.startswith(f"cdp.toml: sources[0].schedule: {problem}")
    assert message.endswith("(source 'crm')")


# --- Scheduler -----------------------------------------------------------------------------------


def test_due_ness_comes_from_the_jobs_last_run():
    clock, runs, last = Clock(), [], {"at": None}
    job = Job("j", Schedule.parse("every 1h"), runs.append, lambda: last["at"])
    scheduler = Scheduler([job], clock=clock)
    assert scheduler.run_pending() == ["j"]  # never run: due now
    assert scheduler.wait(5) and len(runs) == 1
    last["at"] = T0 - timedelta(minutes=59)
    assert scheduler.run_pending() == []
    last["at"] = T0 - timedelta(hours=1)
    assert scheduler.run_pending() == ["j"]
    assert scheduler.wait(5) and len(runs) == 2 and scheduler.failures == []


def test_without_durable_state_the_scheduler_remembers_runs():
    clock, runs = Clock(), []
    scheduler = Scheduler([Job("j", Schedule.parse("*/15 * * * *"), runs.append)], clock=clock)
    assert scheduler.run_pending() == ["j"] and scheduler.wait(5)
    assert scheduler.run_pending() == []
    clock.now = T0.replace(minute=14, second=59)
    assert scheduler.run_pending() == []
    clock.now = T0.replace(minute=15)
    assert scheduler.run_pending() == ["j"] and scheduler.wait(5) and len(runs) == 2


def test_a_failing_job_neither_stops_the_scheduler_nor_the_other_jobs(caplog):
    hours = iter(range(1_000_000))
    ran: list[int] = []

    def fail(stopping: threading.Event) -> None:
        raise RuntimeError("broken job")

    def broken_last_run() -> datetime:
        raise OSError("database away")

    jobs = [
        Job("bad", Schedule.parse("every 1m"), fail),
        Job("unreadable", Schedule.parse("every 1m"), ran.append, broken_last_run),
        Job("good", Schedule.parse("every 1m"), lambda stopping: ran.append(1)),
    ]
    scheduler = Scheduler(jobs, tick=0.01, clock=lambda: T0 + timedelta(hours=next(hours)))
    with caplog.at_level(logging.INFO, logger="cdp.scheduler"):
        scheduler.start()
        try:
            assert wait_until(lambda: len(ran) >= 3 and len(scheduler.failures) >= 3, 10, 0.01)
        finally:
            scheduler.stop()
    assert set(scheduler.failures) == {"bad"}
    messages = [r.getMessage() for r in caplog.records]
    assert "job bad failed" in messages and "cannot tell whether job unreadable is due" in messages
    assert "job good started" in messages


def test_a_slow_job_does_not_hold_up_the_others_nor_run_twice():
    clock, release, fast_runs = Clock(), threading.Event(), []
    jobs = [
        Job("slow", Schedule.parse("every 1m"), lambda stopping: release.wait(10)),
        Job("fast", Schedule.parse("every 1m"), lambda stopping: fast_runs.append(1)),
    ]
    scheduler = Scheduler(jobs, clock=clock)
    try:
        assert scheduler.run_pending() == ["slow", "fast"]
        assert wait_until(lambda: fast_runs == [1], 5, 0.01)
        assert scheduler.running() == ["slow"]
        clock.now += timedelta(hours=1)
        assert scheduler.run_pending() == ["fast"]  # slow is due too, but still running
        assert wait_until(lambda: fast_runs == [1, 1], 5, 0.01)
    finally:
        release.set()
    assert scheduler.wait(5)


def test_stop_is_prompt_and_tells_running_jobs():
    entered, told = threading.Event(), []

    def long_job(stopping: threading.Event) -> None:
        entered.set()
        told.append(stopping.wait(30))

    scheduler = Scheduler([Job("long", Schedule.parse("every 1h"), long_job)], tick=30)
    scheduler.start()
    assert entered.wait(5)
    began = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - began < 2 and told == [True] and scheduler.running() == []


def test_a_job_that_ignores_stop_is_left_after_the_grace(caplog):
    never = threading.Event()
    scheduler = Scheduler([Job("stuck", Schedule.parse("every 1h"), lambda s: never.wait(5))])
    scheduler.run_pending()
    with caplog.at_level(logging.WARNING, logger="cdp.scheduler"):
        scheduler.stop(grace=0.05)
    assert "jobs still running at shutdown: stuck" in caplog.messages
    never.set()


def make_jobs(runtime: Runtime) -> list[Job]:
    return [Job("test:job", Schedule.parse("every 1d"), lambda stopping: None)]


def test_jobs_come_from_factories_and_names_are_unique(database_url, monkeypatch):
    job = Job("segments:recompute", Schedule.parse("every 1d"), lambda stopping: None)
    with started(database_url) as runtime:
        assert scheduled_jobs(runtime, [lambda rt: [job]]) == [job]
        monkeypatch.setattr(scheduler_module, "JOB_FACTORIES", [f"{__name__}:make_jobs"])
        assert [job.name for job in scheduled_jobs(runtime)] == ["test:job"]
    with pytest.raises(ValueError, match="two jobs share a name"):
        Scheduler([job, job])


# --- source syncs --------------------------------------------------------------------------------


def test_a_source_is_due_from_its_last_run_at(database_url, tmp_path):
    path = write_crm(tmp_path)
    with started(
        database_url,
        entry(path=path, schedule="every 1h"),
        entry(name="manual", path=path),  # no schedule: not a job
    ) as runtime:
        (job,) = source_jobs(runtime)
        assert (job.name, str(job.schedule), job.last_run()) == ("source:crm", "every 1h", None)
        scheduler = Scheduler([job])
        assert scheduler.run_pending() == ["source:crm"] and scheduler.wait(10)
        assert state(runtime).status == "completed" and len(events(runtime)) == 2
        assert abs(job.last_run() - utcnow()) < timedelta(seconds=30)

        restarted = Scheduler(source_jobs(runtime))  # a new process: durable state counts
        assert restarted.run_pending() == []
        set_last_run(runtime, "crm", timedelta(minutes=59))
        assert restarted.run_pending() == []
        set_last_run(runtime, "crm", timedelta(minutes=61))
        assert restarted.run_pending() == ["source:crm"] and restarted.wait(10)
        assert len(events(runtime)) == 2 and restarted.failures == []


def test_a_killed_sync_is_due_at_once(database_url, tmp_path):
    with started(database_url, entry(path=write_crm(tmp_path), schedule="every 1d")) as runtime:
        (job,) = source_jobs(runtime)
        with runtime.transaction() as session:
            now = utcnow()
            session.add(
                SourceState(
                    name="crm", status="running", last_run_at=now, running_since=now,
                    heartbeat_at=now, claimed_by="elsewhere:1",
                )
            )  # fmt: skip
        assert job.last_run() == now  # another host's live sync: not due
        with runtime.transaction() as session:
            session.execute(
                update(SourceState).values(heartbeat_at=now - timedelta(hours=1))
            )  # its heartbeat stopped: killed
        assert job.last_run() is None


def test_shutdown_interrupts_a_sync_after_a_batch_and_the_next_run_resumes(database_url, tmp_path):
    path = write_crm(tmp_path, rows=5)
    with started(database_url, entry(path=path, schedule="every 1d", batch_size=2)) as runtime:
        (job,) = source_jobs(runtime)
        stopping = threading.Event()
        stopping.set()
        job.run(stopping)  # returns quietly after the first batch
        after = state(runtime)
        assert after.status == "failed" and after.last_error.startswith("Interrupted: shutting")
        assert len(events(runtime)) == 2
        assert job.last_run() is None  # resumed at the next start, not a day later
        job.run(threading.Event())
        assert state(runtime).status == "completed" and len(events(runtime)) == 5


class Tracker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.most = self.runs = 0


def slow_source_plugin(tracker: Tracker) -> object:
    class SlowSource(SourceConnector):
        name = "slow"

        def read(self, checkpoint: str | None) -> Iterator[RecordBatch]:
            with tracker.lock:
                tracker.active += 1
                tracker.runs += 1
                tracker.most = max(tracker.most, tracker.active)
            try:
                time.sleep(0.3)  # long enough for the other scheduler to try
                yield RecordBatch([{"Id": "1", "Email": "a@example.com"}], "done")
            finally:
                with tracker.lock:
                    tracker.active -= 1

    return types.SimpleNamespace(register_sources=hookimpl(lambda: [SlowSource]))


def tick_together(scheduler: Scheduler, barrier: threading.Barrier, out: list) -> None:
    barrier.wait()
    out.append(scheduler.run_pending())


def test_two_schedulers_on_one_database_never_sync_a_source_at_once(database_url):
    tracker = Tracker()
    config = make_config(database_url, sources=[entry("slow", "slow", schedule="every 1h")])
    runtimes = [
        Runtime.start(config, extra_plugins=[("slow", slow_source_plugin(tracker))])
        for _ in range(2)
    ]
    try:
        schedulers = [Scheduler(source_jobs(rt)) for rt in runtimes]
        for round_ in range(1, 4):
            if round_ > 1:
                set_last_run(runtimes[0], "slow", timedelta(hours=2))
            barrier, started_jobs = threading.Barrier(2), []
            threads = [
                threading.Thread(target=tick_together, args=(s, barrier, started_jobs))
                for s in schedulers
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert all(s.wait(10) for s in schedulers)
            assert tracker.runs == round_ and tracker.most == 1, started_jobs
            assert all(s.failures == [] for s in schedulers)  # a busy source is skipped
        assert all(s.run_pending() == [] for s in schedulers)  # synced recently
        assert state(runtimes[0], "slow").status == "completed"
    finally:
        for runtime in runtimes:
            runtime.close()


# --- the server ----------------------------------------------------------------------------------


@pytest.mark.parametrize("in_server", [True, False])
def test_the_server_runs_schedules_unless_told_not_to(database_url, tmp_path, in_server):
    config = make_config(
        database_url,
        sources=[entry(path=write_crm(tmp_path), schedule="every 1h")],
        scheduler=SchedulerConfig(in_server=in_server, tick_seconds=0.05),
    )
    runtime = Runtime.start(config)
    try:
        with TestClient(create_app(runtime)) as client:
            scheduler = client.app.state.scheduler
            names = [job.name for job in scheduler.jobs]
            assert ("source:crm" in names) is in_server and (names == []) is not in_server
            synced = wait_until(lambda: len(events(runtime)) == 2, 2 if in_server else 0.3, 0.02)
            assert synced is in_server
        assert scheduler.stopping.is_set() and scheduler.running() == []
    finally:
        runtime.close()
