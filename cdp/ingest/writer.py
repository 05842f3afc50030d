"""The server's single writer: commits many requests' messages in one transaction (group commit).

Request handlers hand their parsed messages to `Writer.submit` and await the outcome; the writer
thread takes everything queued (up to `max_events`), stores and applies it in one write
transaction, commits, and only then answers each request. So an acknowledged message is
committed, and the per-transaction cost is shared by every request that arrived meanwhile.
When idle it applies any stored-but-unprocessed events (the backlog).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cdp.collect.messages import Message
from cdp.ingest.pipeline import Accepted, Applied, Pipeline
from cdp.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class _Job:
    messages: Sequence[Message]
    source: str
    future: asyncio.Future[list[Accepted]]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class Writer:
    def __init__(self, runtime: Runtime, max_events: int = 2000, idle_seconds: float = 1.0) -> None:
        self.runtime = runtime
        self.pipeline = Pipeline(runtime)
        self.max_events = max_events
        self.idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cdp-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def submit(self, messages: Sequence[Message], source: str) -> list[Accepted]:
        if self._thread is None:
            raise RuntimeError("the writer is not running")
        loop = asyncio.get_running_loop()
        job = _Job(messages, source, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    def _run(self) -> None:
        self._drain_backlog()
        while True:
            try:
                first = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                self._drain_backlog()
                continue
            if first is _STOP:
                return
            jobs = [first]
            count = len(first.messages)  # type: ignore[attr-defined]
            stop = False
            while count < self.max_events:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
                count += len(nxt.messages)  # type: ignore[attr-defined]
            self._commit(jobs)  # type: ignore[arg-type]
            if stop:
                return

    def _commit(self, jobs: list[_Job]) -> None:
        applied = Applied()
        try:
            with self.runtime.writing() as session:
                results = [
                    self.pipeline.ingest(session, job.messages, job.source, applied) for job in jobs
                ]
        except Exception as exc:
            log.exception("write transaction for %d requests failed", len(jobs))
            for job in jobs:
                job.loop.call_soon_threadsafe(_fail, job.future, exc)
            return
        for job, result in zip(jobs, results, strict=True):
            job.loop.call_soon_threadsafe(_succeed, job.future, result)
        applied.notify(self.runtime)

    def _drain_backlog(self) -> None:
        try:
            while self.pipeline.process_backlog() and self._queue.empty():
                pass
        except Exception:
            log.exception("processing the backlog failed; will retry")


def _succeed(future: asyncio.Future[list[Accepted]], result: list[Accepted]) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[list[Accepted]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
