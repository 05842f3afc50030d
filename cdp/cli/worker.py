"""`cdp worker`: the schedules (source syncs …) and the ingestion backlog, apart from the HTTP
server. Run any number of workers against one database; claims keep their jobs apart."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer

from cdp.cli.common import ConfigOption, config_file, open_runtime
from cdp.config import load_config
from cdp.decisions.catalogue import load_providers
from cdp.ingest.pipeline import Pipeline
from cdp.logs import configure_logging
from cdp.models.registry import load_models
from cdp.scheduler import Scheduler, scheduled_jobs
from cdp.sources.spec import load_sources

log = logging.getLogger("cdp.worker")
POLL_SECONDS = 0.1
"""How soon a signal is acted on."""


def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due now, wait for it to end, and exit")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run scheduled jobs and apply the ingestion backlog until SIGTERM or SIGINT."""
    cfg = load_config(config)
    runtime = open_runtime(cfg)
    try:
        load_sources(cfg, runtime.plugins, config_file(config))  # a bad entry stops it, named
        load_providers(cfg, runtime.plugins, config_file(config))
        load_models(cfg, runtime.plugins, config_file(config))
        scheduler = Scheduler(scheduled_jobs(runtime), cfg.scheduler.tick_seconds)
        configure_logging()
        failed = _work(scheduler, Pipeline(runtime), once)
    finally:
        runtime.close()
    if failed:
        raise typer.Exit(1)


def _work(scheduler: Scheduler, pipeline: Pipeline, once: bool) -> bool:
    """Run until a signal (or, with `once`, until the due jobs end); True if a job failed."""
    signalled: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)  # only a flag: taking locks in a handler can deadlock

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    jobs = ", ".join(f"{job.name} ({job.schedule})" for job in scheduler.jobs) or "none"
    log.info("worker started; scheduled jobs: %s", jobs)
    if once:
        scheduler.run_pending()
        _drain(pipeline, lambda: bool(signalled))
        while not signalled and not scheduler.wait(POLL_SECONDS):
            pass
    else:
        scheduler.start()
        next_drain = 0.0
        while not signalled:
            if time.monotonic() >= next_drain:
                _drain(pipeline, lambda: bool(signalled))
                next_drain = time.monotonic() + scheduler.tick
            time.sleep(POLL_SECONDS)
    if signalled:
        log.info("received %s; stopping", signal.Signals(signalled[0]).name)
    scheduler.stop()
    log.info("worker stopped")
    return bool(scheduler.failures)


def _drain(pipeline: Pipeline, stop: Callable[[], bool]) -> None:
    """Apply stored events that are not applied yet (left by a failed resolution)."""
    done = 0
    try:
        while not stop() and (count := pipeline.process_backlog()):
            done += count
    except Exception:
        log.exception("applying the backlog failed; will retry")
    if done:
        log.info("applied %d events from the backlog", done)
