"""A small, realistic, deterministic demo data set, sent through the ingestion pipeline as
Segment messages: shoppers browse anonymously, sign up (identify), shop, and some come back on a
second device, so the demo has merges, identity edges and trait provenance like real traffic."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from cdp.collect.messages import Message, parse_message
from cdp.db.models import Identifier
from cdp.decisions import catalogue
from cdp.ingest.pipeline import ingest_now
from cdp.runtime import Runtime
from cdp.segments import service

FIRST = [
    "Ada",
    "Ben",
    "Chloé",
    "Dmitri",
    "Eva",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luca",
    "Maya",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
]
LAST = [
    "Lovelace",
    "Okafor",
    "Martin",
    "Ivanov",
    "Schmidt",
    "Haddad",
    "Hopper",
    "Tanaka",
    "García",
    "Berg",
    "Adeyemi",
    "Rossi",
    "Cohen",
    "Smith",
    "Nowak",
    "Patel",
    "Byrne",
]
CITIES = [
    ("Berlin", "DE", "+4930"),
    ("Paris", "FR", "+3314"),
    ("London", "GB", "+44207"),
    ("Madrid", "ES", "+3491"),
    ("Amsterdam", "NL", "+3120"),
    ("New York", "US", "+1212"),
]
PRODUCTS = [
    ("SKU-100", "Trail running shoes", "shoes", 129.0),
    ("SKU-101", "Rain jacket", "outerwear", 189.0),
    ("SKU-102", "Merino socks", "accessories", 19.0),
    ("SKU-103", "Hiking backpack", "bags", 149.0),
    ("SKU-104", "Running cap", "accessories", 25.0),
    ("SKU-105", "Fleece", "outerwear", 89.0),
]
PAGES = ["/", "/new", "/sale", "/shoes", "/outerwear", "/help/returns"]
SOURCE = "demo"
MARKER = ("user_id", "demo-0001")


def load_demo(runtime: Runtime, profiles: int = 200, seed: int = 7) -> bool:
    """Load the demo data set; False (and nothing written) if it is already there."""
    with runtime.sessions() as session:
        if session.scalar(
            select(Identifier.id).where(Identifier.type == MARKER[0], Identifier.value == MARKER[1])
        ):
            return False
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    messages = [m for n in range(1, profiles + 1) for m in _shopper(rng, n, now)]
    messages.sort(key=lambda m: m.timestamp)
    for start in range(0, len(messages), 1000):
        ingest_now(runtime, messages[start : start + 1000], SOURCE)
    for key, definition in COMPUTED.items():
        service.upsert_computed(runtime, key, definition)
    for key, (name, definition) in SEGMENTS.items():
        service.upsert_segment(runtime, key, definition, name)
    for offer in OFFERS:
        catalogue.upsert_offer(runtime, "catalogue", offer)
    return True


COMPUTED: dict[str, dict[str, Any]] = {
    "orders": {"aggregate": "count", "event": "Order Completed"},
    "spend_90d": {
        "aggregate": "sum", "event": "Order Completed", "property": "total", "within": "90d",
    },
    "favourite_category": {
        "aggregate": "most_frequent", "event": "Product Viewed", "property": "category",
    },
}  # fmt: skip
SEGMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "repeat_buyers": (
        "Repeat buyers",
        {"event": "Order Completed", "within": "90d", "count": {"op": ">=", "value": 2}},
    ),
    "big_spenders": ("Big spenders", {"computed": "spend_90d", "op": ">=", "value": 150}),
    "marketable": (
        "Agreed to marketing",
        {"consent": "marketing", "op": "=", "value": "granted"},
    ),
    "pro_window_shoppers": (
        "Pro plan, viewing but not buying",
        {
            "and": [
                {"trait": "plan", "op": "=", "value": "pro"},
                {"event": "Product Viewed", "within": "30d"},
                {"not": {"event": "Order Completed", "within": "30d"}},
            ]
        },
    ),
}
"""Shown on the demo's profiles; built as an admin would, through the same service."""

_GREETING = "{{ profile.traits.first_name | default('there') }}"
OFFERS: list[dict[str, Any]] = [
    {
        "key": "free-shipping",
        "name": "Free shipping",
        "value": 12,
        "priority": 5,
        "eligibility": {"event": "Product Added", "within": "30d"},
        "content": {
            "web": {"title": f"Free shipping, {_GREETING}!", "link": "/cart"},
            "email": {
                "subject": f"{_GREETING}, your cart ships free",
                "text": "Complete your order today and shipping is on us.",
                "html": "<p>Complete your order today and <b>shipping is on us</b>.</p>",
            },
        },
    },
    {
        "key": "loyalty-10",
        "name": "10% for repeat buyers",
        "value": 25,
        "priority": 8,
        "eligibility": {"segment": "repeat_buyers"},
        "content": {"*": {"title": f"Thank you, {_GREETING}: 10% off your next order"}},
    },
    {
        "key": "pro-upgrade",
        "name": "Upgrade to Pro",
        "value": 40,
        "priority": 3,
        "eligibility": {"trait": "plan", "op": "in", "value": ["free", "plus"]},
        "content": {"*": {"title": "Go Pro: two months free"}},
    },
    {
        "key": "newsletter",
        "name": "Join the newsletter",
        "value": 2,
        "priority": 1,
        "content": {"*": {"title": "News and offers, once a week"}},
    },
]


def _shopper(rng: random.Random, n: int, now: datetime) -> list[Message]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, country, dial = rng.choice(CITIES)
    email = f"{first.lower()}.{last.lower()}{n}@example.com".replace("é", "e").replace("í", "i")
    user_id, anon = f"demo-{n:04d}", f"anon-{rng.getrandbits(48):012x}"
    start = now - timedelta(days=rng.randint(2, 400))
    span = int((now - start).total_seconds())
    at = [start + timedelta(seconds=rng.randint(0, span)) for _ in range(rng.randint(4, 25))]
    at.sort()
    traits: dict[str, Any] = {
        "first_name": first,
        "last_name": last,
        "email": email,
        "city": city,
        "country": country,
        "plan": rng.choice(["free", "free", "plus", "pro"]),
    }
    if rng.random() < 0.6:
        traits["phone"] = f"{dial}{rng.randint(1_000_000, 9_999_999)}"
    marketing = rng.random() < 0.7
    out = [
        _message(
            rng,
            "page",
            at[0],
            anonymousId=anon,
            name="Landing",
            properties={"path": rng.choice(PAGES)},
        )
    ]
    out.append(
        _message(
            rng,
            "identify",
            at[1],
            userId=user_id,
            anonymousId=anon,
            traits=traits,
            context={"consent": {"categoryPreferences": {"marketing": marketing}}},
        )
    )
    # Some come back on a phone: anonymous at first, linked (a merge) once they give their e-mail.
    second_device = f"anon-{rng.getrandbits(48):012x}" if rng.random() < 0.3 else None
    linked = False
    for moment in at[2:]:
        ids: dict[str, Any] = {"userId": user_id, "anonymousId": anon}
        if second_device and rng.random() < 0.4:
            ids = {"anonymousId": second_device}
            if linked or rng.random() < 0.4:
                ids["context"] = {"traits": {"email": email}}
                linked = True
        out.append(_activity(rng, moment, ids))
    return out


def _activity(rng: random.Random, at: datetime, ids: dict[str, Any]) -> Message:
    kind = rng.choices(
        ["page", "Product Viewed", "Product Added", "Order Completed"], [6, 4, 2, 1]
    )[0]
    sku, title, category, price = rng.choice(PRODUCTS)
    if kind == "page":
        return _message(rng, "page", at, properties={"path": rng.choice(PAGES)}, **ids)
    if kind == "Order Completed":
        qty = rng.randint(1, 3)
        props = {
            "order_id": f"o-{rng.getrandbits(32):08x}",
            "total": price * qty,
            "currency": "EUR",
            "products": [{"sku": sku, "category": category, "quantity": qty}],
        }
    else:
        props = {"sku": sku, "name": title, "category": category, "price": price}
    return _message(rng, "track", at, event=kind, properties=props, **ids)


def _message(rng: random.Random, type_: str, at: datetime, **fields: Any) -> Message:
    body = {
        "type": type_,
        "messageId": f"demo-{rng.getrandbits(64):016x}",
        "timestamp": at.isoformat(),
        **fields,
    }
    return parse_message(body, None, at + timedelta(seconds=1), None)
