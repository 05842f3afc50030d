"""Never two syncs of one source at once: a sync claims the source's state row first.

The claim records who holds it ("host:pid") and a heartbeat, renewed with every committed batch.
A claim is stale, and taken over, when its heartbeat is older than `STALE_AFTER` or its holder
ran on this host and is gone (a sync killed with SIGKILL cannot release its claim).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from cdp.db.models import SourceState, utcnow
from cdp.errors import CDPError
from cdp.runtime import Runtime

STALE_AFTER = timedelta(minutes=10)
"""Far longer than one batch takes; a live sync renews its heartbeat with every batch."""


class SourceBusy(CDPError):
    """Another sync holds the source."""


@dataclass(frozen=True)
class Claim:
    name: str
    holder: str
    started_at: datetime


def this_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_source(runtime: Runtime, name: str) -> Claim:
    """Take the source for a sync, resetting the run's counters; raises SourceBusy when a live
    sync holds it."""
    holder, now = this_holder(), utcnow()
    for attempt in range(2):
        try:
            with runtime.writing() as session:
                state = session.get(SourceState, name, with_for_update=True)
                if state is None:
                    state = SourceState(name=name)
                    session.add(state)
                elif state.running_since is not None and not is_stale(state, now):
                    raise SourceBusy(
                        f"source {name!r} is being synced by {state.claimed_by} since "
                        f"{state.running_since:%Y-%m-%d %H:%M:%S} UTC; try again when it ends"
                    )
                state.status, state.last_run_at, state.last_error = "running", now, None
                state.running_since, state.claimed_by, state.heartbeat_at = now, holder, now
                state.rows_read = state.rows_imported = state.rows_duplicate = 0
                state.rows_merged = state.rows_rejected = 0
            return Claim(name, holder, now)
        except IntegrityError:  # another sync created the row first: look again
            if attempt:
                raise
    raise AssertionError("unreachable")


def release(runtime: Runtime, claim: Claim, error: str | None) -> None:
    """Give the source back, recording how the run ended."""
    with runtime.writing() as session:
        session.execute(
            update(SourceState)
            .where(SourceState.name == claim.name, SourceState.claimed_by == claim.holder)
            .values(
                status="failed" if error else "completed",
                last_error=error[:4000] if error else None,
                running_since=None,
                claimed_by=None,
                heartbeat_at=utcnow(),
            )
        )


def is_stale(state: SourceState, now: datetime) -> bool:
    if state.heartbeat_at is None or now - state.heartbeat_at > STALE_AFTER:
        return True
    host, _, pid = (state.claimed_by or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True
