"""A generated shop with known signals, for the models' tests and benchmark.

Every profile belongs to a persona (its own activity rate, purchase probability and order
value) and has an individual engagement and an affinity for shoes. Its events before the cut-off
and in the window after it come from the same Poisson process, so the generating model's
probabilities are known exactly and returned with the data:

- churn: P(no activity in the window) = exp(-rate x window days);
- propensity: P(an order with shoes in the window) = 1 - exp(-rate x p_purchase x p_shoes x days);
- lifetime value: E(spend in the window) = rate x p_purchase x days x mean order value;
- personas: the persona each profile was drawn from.

Rows go straight into `profiles` and `events` (as identity resolution would leave them), in
chunks, through `cdp.db.bulk.insert_rows` (COPY on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine

from cdp.db.bulk import insert_rows
from cdp.db.models import Event, Profile, new_id

PERSONAS = {
    # name: (share, events per day, P(an event is a purchase), mean order value, lapses)
    "frequent high spenders": (0.20, 0.40, 0.30, 150.0, False),
    "occasional low spenders": (0.35, 0.08, 0.15, 30.0, False),
    "lapsed buyers": (0.20, 0.25, 0.25, 80.0, True),
    "non-buyers": (0.25, 0.06, 0.0, 0.0, False),
}
HISTORY_DAYS = 180
WINDOW_DAYS = 30
CATEGORIES = ("shoes", "shirts", "bags", "hats", "socks")
CHUNK = 2000


@dataclass
class World:
    now: datetime
    cutoff: datetime
    profile_ids: list[str] = field(default_factory=list)
    persona: list[str] = field(default_factory=list)
    p_churn: list[float] = field(default_factory=list)
    p_shoes: list[float] = field(default_factory=list)
    expected_spend: list[float] = field(default_factory=list)
    churned: list[int] = field(default_factory=list)
    """What happened in the window: no activity, an order with shoes, the spend."""
    bought_shoes: list[int] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)
    events: int = 0

    def truth(self, name: str) -> dict[str, float | str]:
        return dict(zip(self.profile_ids, getattr(self, name), strict=True))


def generate(
    engine: Engine,
    profiles: int,
    events: int | None = None,
    now: datetime | None = None,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> World:
    """Insert `profiles` profiles and about `events` events (default: what the personas' rates
    give, about 30 per profile) ending at `now`; returns the generating truths."""
    rng = np.random.default_rng(seed)
    now = now or datetime.now().astimezone()
    world = World(now=now, cutoff=now - timedelta(days=WINDOW_DAYS))
    names = list(PERSONAS)
    shares = np.array([PERSONAS[n][0] for n in names])
    scale = 1.0
    if events is not None:  # scale every rate so the total comes out near `events`
        scale = events / (profiles * _expected_events_per_profile())
    for start in range(0, profiles, CHUNK):
        count = min(CHUNK, profiles - start)
        groups = rng.choice(len(names), size=count, p=shares)
        rows: list[tuple] = []
        profile_rows: list[tuple] = []
        for g in groups:
            pid = new_id()
            persona = names[g]
            _, rate, p_buy, value, lapses = PERSONAS[persona]
            rate = rate * scale * float(np.exp(0.7 * rng.standard_normal()))
            p_shoes = float(1 / (1 + np.exp(-(rng.standard_normal() * 1.5 - 1.0))))
            # Lapsed buyers stopped 60 to 150 days before the cut-off; one in ten comes back.
            stop = float(rng.uniform(60, 150)) if lapses else 0.0
            window_rate = rate * (0.1 if lapses else 1.0)
            history = _times(rng, rate, HISTORY_DAYS - stop, world.cutoff, HISTORY_DAYS)
            window = _times(rng, window_rate, WINDOW_DAYS, now, WINDOW_DAYS)
            for at in history:
                rows.append(_event(rng, pid, at, p_buy, value, p_shoes))
            shoes, spend = 0, 0.0
            for at in window:
                rows.append(row := _event(rng, pid, at, p_buy, value, p_shoes))
                if row[3] == "Order Completed":
                    properties = row[-1]["properties"]
                    spend += properties["total"]
                    shoes |= properties["products"][0]["category"] == "shoes"
            world.churned.append(int(not window))
            world.bought_shoes.append(int(shoes))
            world.spend.append(spend)
            profile_rows.append((pid, {}, {}, {}, now, now))
            world.profile_ids.append(pid)
            world.persona.append(persona)
            world.p_churn.append(float(np.exp(-window_rate * WINDOW_DAYS)))
            world.p_shoes.append(float(1 - np.exp(-window_rate * p_buy * p_shoes * WINDOW_DAYS)))
            world.expected_spend.append(window_rate * p_buy * WINDOW_DAYS * value)
        with engine.begin() as conn:
            insert_rows(
                conn,
                Profile.__table__,
                ("id", "traits", "trait_sources", "computed_traits", "created_at", "updated_at"),
                profile_rows,
            )
            insert_rows(conn, Event.__table__, EVENT_COLUMNS, rows)
        world.events += len(rows)
        if progress is not None:
            progress(start + count)
    return world


EVENT_COLUMNS = (
    "source", "message_id", "type", "name", "profile_id", "timestamp", "received_at",
    "processed_at", "payload",
)  # fmt: skip


def _expected_events_per_profile() -> float:
    lognormal_mean = float(np.exp(0.7**2 / 2))
    total = 0.0
    for share, rate, _, _, lapses in PERSONAS.values():
        active = HISTORY_DAYS - (105.0 if lapses else 0.0) + WINDOW_DAYS * (0.1 if lapses else 1)
        total += share * rate * lognormal_mean * active
    return total


def _times(
    rng: np.random.Generator, rate: float, days: float, end: datetime, span: float
) -> list[datetime]:
    """Poisson arrivals at `rate` per day over the first `days` of the `span` days before
    `end`."""
    if days <= 0:
        return []
    n = int(rng.poisson(rate * days))
    offsets = np.sort(rng.uniform(0, days, n))
    start = end - timedelta(days=span)
    return [start + timedelta(days=float(d)) for d in offsets]


def _event(
    rng: np.random.Generator, pid: str, at: datetime, p_buy: float, value: float, p_shoes: float
) -> tuple:
    message_id = new_id()
    roll = rng.random()
    category = "shoes" if rng.random() < p_shoes else CATEGORIES[int(rng.integers(1, 5))]
    if roll < p_buy:
        total = round(float(value * rng.lognormal(0, 0.3)), 2)
        payload = {
            "type": "track",
            "event": "Order Completed",
            "properties": {"total": total, "products": [{"category": category, "quantity": 1}]},
        }
        kind, name = "track", "Order Completed"
    elif roll < p_buy + (1 - p_buy) / 2:
        payload = {"type": "track", "event": "Product Viewed", "properties": {"category": category}}
        kind, name = "track", "Product Viewed"
    else:
        payload = {"type": "page", "name": "Home", "properties": {"path": "/"}}
        kind, name = "page", "Home"
    payload["messageId"] = message_id
    payload["timestamp"] = at.isoformat()
    return ("synthetic", message_id, kind, name, pid, at, at, at, payload)
