"""Running an import: batches from the connector, mapped, rejected or ingested, and committed
with the checkpoint.

Each batch's events, rejects, counters and the checkpoint after it commit in one write
transaction, so a sync killed at any point resumes exactly after the last committed batch: no
record is lost, none is imported twice (and a replayed one would be a no-op anyway, its messageId
being derived from the record).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from cdp.collect.messages import Message, MessageError, parse_message
from cdp.db.models import SourceReject, SourceState, utcnow
from cdp.errors import CDPError
from cdp.ingest.pipeline import Applied, Pipeline
from cdp.runtime import Runtime
from cdp.sources.claim import Claim, claim_source, release
from cdp.sources.mapping import MappingError, record_message
from cdp.sources.records import Positioned, RecordError, SourceRecord
from cdp.sources.spec import Source, find_source

log = logging.getLogger(__name__)

MAX_RAW_CHARS = 100_000
"""A reject keeps this much of the raw record: enough to see what is wrong with it."""


class ClaimLost(CDPError):
    """Another sync took the source over (this one was thought dead); this one stops."""


@dataclass
class SyncSummary:
    source: str
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    """Records whose messageId was already stored: replays, nothing changed."""
    merged: int = 0
    """Profile merges the imported records caused."""
    rejected: int = 0

    def __str__(self) -> str:
        return (
            f"{self.source}: read {self.read:,}, imported {self.imported:,}, "
            f"duplicates {self.duplicates:,}, merged {self.merged:,}, rejected {self.rejected:,}"
        )


@dataclass(frozen=True)
class SyncProgress:
    summary: SyncSummary
    done: int | None
    """Units of the connector's `position()` (e.g. bytes) done, when it reports them."""
    total: int | None


ProgressCallback = Callable[[SyncProgress], None]


def sync_source(
    runtime: Runtime, name: str, progress: ProgressCallback | None = None, file: str = "cdp.toml"
) -> SyncSummary:
    """Import what the source `name` holds after its last committed checkpoint."""
    return run_sync(runtime, find_source(runtime.config, runtime.plugins, name, file), progress)


def run_sync(
    runtime: Runtime, source: Source, progress: ProgressCallback | None = None
) -> SyncSummary:
    return _run_claimed(runtime, source, claim_source(runtime, source.name), progress)


def start_sync(runtime: Runtime, source: Source) -> threading.Thread:
    """Claim the source now (a busy source raises SourceBusy here, to the caller) and import in a
    background thread; progress and the outcome are on the source's state row."""
    claim = claim_source(runtime, source.name)

    def run() -> None:
        try:
            _run_claimed(runtime, source, claim, None)
        except Exception:
            log.exception("sync of source %r failed", source.name)

    thread = threading.Thread(target=run, name=f"sync-{source.name}", daemon=True)
    thread.start()
    return thread


def _run_claimed(
    runtime: Runtime, source: Source, claim: Claim, progress: ProgressCallback | None
) -> SyncSummary:
    try:
        summary = _import(runtime, source, claim, progress)
    except BaseException as exc:
        release(runtime, claim, f"{type(exc).__name__}: {exc}")
        raise
    release(runtime, claim, None)
    return summary


def _import(
    runtime: Runtime, source: Source, claim: Claim, progress: ProgressCallback | None
) -> SyncSummary:
    summary = SyncSummary(source.name)
    with runtime.sessions() as session:
        checkpoint = session.scalar(
            select(SourceState.checkpoint).where(SourceState.name == source.name)
        )
    batch_writer = _BatchWriter(runtime, source, claim, summary)
    batches = iter(source.connector.read(checkpoint))
    try:
        for batch in batches:
            batch_writer.write(batch.records, batch.checkpoint)
            if progress is not None:
                done, total = (
                    source.connector.position()
                    if isinstance(source.connector, Positioned)
                    else (None, None)
                )
                progress(SyncProgress(summary, done, total))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:  # a generator: let it close its files now
            close()
    return summary


class _BatchWriter:
    def __init__(self, runtime: Runtime, source: Source, claim: Claim, summary: SyncSummary):
        self.runtime = runtime
        self.source = source
        self.claim = claim
        self.summary = summary
        self.pipeline = Pipeline(runtime)

    def write(self, records: Sequence[Mapping[str, Any]], checkpoint: str) -> None:
        received_at = utcnow()
        messages: list[Message] = []
        rejects: list[dict[str, Any]] = []
        for record in records:
            message = self._message(record, received_at, rejects)
            if message is not None:
                messages.append(message)
        applied = Applied()
        after = SyncSummary(self.summary.source, read=self.summary.read + len(records))
        with self.runtime.writing() as session:
            accepted = (
                self.pipeline.ingest(session, messages, self.source.name, applied)
                if messages
                else []
            )
            if rejects:
                session.execute(insert(SourceReject), rejects)
            fresh = sum(1 for a in accepted if a.event_id is not None)
            after.imported = self.summary.imported + fresh
            after.duplicates = self.summary.duplicates + len(accepted) - fresh
            after.merged = self.summary.merged + len(applied.merges)
            after.rejected = self.summary.rejected + len(rejects)
            claimed = session.execute(
                update(SourceState)
                .where(
                    SourceState.name == self.source.name,
                    SourceState.claimed_by == self.claim.holder,
                )
                .values(
                    checkpoint=checkpoint,
                    heartbeat_at=utcnow(),
                    rows_read=after.read,
                    rows_imported=after.imported,
                    rows_duplicate=after.duplicates,
                    rows_merged=after.merged,
                    rows_rejected=after.rejected,
                )
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise ClaimLost(f"source {self.source.name!r} was taken over by another sync")
        for counter in ("read", "imported", "duplicates", "merged", "rejected"):
            setattr(self.summary, counter, getattr(after, counter))
        applied.notify(self.runtime)

    def _message(
        self, record: Mapping[str, Any], received_at: datetime, rejects: list[dict[str, Any]]
    ) -> Message | None:
        try:
            if isinstance(record, RecordError):
                raise MappingError(record.reason)
            body = record_message(self.source.spec, record, record_key(record))
            return parse_message(body, None, received_at, None)
        except (MappingError, MessageError) as exc:
            rejects.append(self._reject(record, str(exc)))
            return None

    def _reject(self, record: Mapping[str, Any], reason: str) -> dict[str, Any]:
        if isinstance(record, SourceRecord):
            raw, row, location = record.raw, record.row, record.location
        else:
            raw, row, location = None, None, None
        if raw is None:
            raw = json.dumps(record, ensure_ascii=False, default=str)
        return {
            "source": self.source.name,
            "run_started_at": self.claim.started_at,
            "location": _storable(location)[:1024] if location else None,
            "row_number": row,
            "raw": _storable(raw[:MAX_RAW_CHARS]),
            "reason": _storable(reason),
            "created_at": utcnow(),
        }


def record_key(record: Mapping[str, Any]) -> str:
    """The connector's key for the record; for a plain mapping, a hash of its content (so the
    same content twice is imported once)."""
    if isinstance(record, SourceRecord):
        return record.key
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _storable(text: str) -> str:
    # PostgreSQL refuses NUL in text columns, and a lone surrogate cannot be encoded at all.
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
