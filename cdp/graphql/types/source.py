from __future__ import annotations

from datetime import datetime

import strawberry

from cdp.db.models import SourceState, utcnow
from cdp.sources.claim import is_stale
from cdp.sources.spec import Source as SourceConfig


@strawberry.type(description="A configured source connector and how its imports went.")
class Source:
    name: str
    type: str
    kind: str
    schedule: str | None
    status: str = strawberry.field(
        description="never run, running, interrupted (its process died), completed or failed"
    )
    last_run_at: datetime | None
    last_error: str | None
    checkpoint: str | None = strawberry.field(description="Where the next sync resumes.")
    rows_read: int
    rows_imported: int
    rows_duplicate: int
    rows_merged: int
    rows_rejected: int

    @classmethod
    def build(cls, source: SourceConfig, state: SourceState | None) -> Source:
        return cls(
            name=source.name,
            type=source.spec.type,
            kind=source.spec.kind,
            schedule=source.spec.schedule,
            status=_status(state),
            last_run_at=state.last_run_at if state else None,
            last_error=state.last_error if state else None,
            checkpoint=state.checkpoint if state else None,
            rows_read=state.rows_read if state else 0,
            rows_imported=state.rows_imported if state else 0,
            rows_duplicate=state.rows_duplicate if state else 0,
            rows_merged=state.rows_merged if state else 0,
            rows_rejected=state.rows_rejected if state else 0,
        )


def _status(state: SourceState | None) -> str:
    if state is None:
        return "never run"
    if state.running_since is not None and is_stale(state, utcnow()):
        return "interrupted"
    return state.status
