"""Building stores for the enrichment-model tests: configs with `[[models]]`, generated shops
with known signals (cdp.models.synthetic), and hand-made events."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import make_config
from sqlalchemy import Engine, insert

from cdp.config import ComponentEntry, Config
from cdp.db.models import Event, Profile, new_id
from cdp.runtime import Runtime

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHOES = {"properties.products[].category": "shoes"}
ENTRIES: dict[str, dict[str, Any]] = {
    "churn": {"type": "churn"},
    "propensity_shoes": {
        "type": "propensity",
        "event": "Order Completed",
        "where": SHOES,
        "signals": [{"event": "Product Viewed", "where": {"properties.category": "shoes"}}],
    },
    "ltv": {"type": "lifetime_value"},
    "persona": {"type": "personas"},
}
_ids = itertools.count(1)


def models_config(url: str, *names: str, **more: dict[str, Any]) -> Config:
    """A config with the named models of ENTRIES and the `more` entries (with neither: all four
    of ENTRIES)."""
    chosen = {n: ENTRIES[n] for n in (names or ([] if more else ENTRIES))} | more
    entries = [ComponentEntry(name=name, **fields) for name, fields in chosen.items()]
    return make_config(url, models=entries)


def start(url: str, *names: str, **more: dict[str, Any]) -> Runtime:
    return Runtime.start(models_config(url, *names, **more))


def add_profile(engine: Engine) -> str:
    pid = new_id()
    with engine.begin() as conn:
        conn.execute(
            insert(Profile.__table__).values(
                id=pid, traits={}, trait_sources={}, computed_traits={}, created_at=NOW,
                updated_at=NOW,
            )
        )  # fmt: skip
    return pid


def add_event(
    engine: Engine,
    profile_id: str,
    at: datetime,
    name: str | None = "Order Completed",
    type_: str = "track",
    **properties: Any,
) -> None:
    message_id = f"t{next(_ids)}"
    payload = {"type": type_, "event": name, "properties": properties, "messageId": message_id}
    with engine.begin() as conn:
        conn.execute(
            insert(Event.__table__).values(
                source="test", message_id=message_id, type=type_, name=name,
                profile_id=profile_id, timestamp=at, received_at=at, processed_at=at,
                payload=payload,
            )
        )  # fmt: skip


def days_ago(days: float, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days)
