"""A small, realistic, deterministic demo data set: shoppers with identifiers, traits and events."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.db.models import Consent, Event, Identifier, Profile, new_id

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
    ("Berlin", "DE", "+49"),
    ("Paris", "FR", "+33"),
    ("London", "GB", "+44"),
    ("Madrid", "ES", "+34"),
    ("Amsterdam", "NL", "+31"),
    ("New York", "US", "+1"),
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
DEMO_SOURCE = "demo"
MARKER = ("user_id", "demo-0001")


def load_demo(session: Session, profiles: int = 200, seed: int = 7) -> bool:
    """Load the demo data set; False (and nothing written) if it is already there."""
    if session.scalar(
        select(Identifier.id).where(Identifier.type == MARKER[0], Identifier.value == MARKER[1])
    ):
        return False
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    dependents: list[object] = []  # written after the profiles they point to
    for n in range(1, profiles + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, country, dial = rng.choice(CITIES)
        created = now - timedelta(days=rng.randint(1, 400))
        email = f"{first.lower()}.{last.lower()}{n}@example.com".replace("é", "e").replace("í", "i")
        traits = {
            "first_name": first,
            "last_name": last,
            "email": email,
            "city": city,
            "country": country,
            "plan": rng.choice(["free", "free", "plus", "pro"]),
        }
        profile = Profile(
            id=new_id(),
            traits=traits,
            created_at=created,
            updated_at=now,
            trait_sources={k: {"source": DEMO_SOURCE, "at": created.isoformat()} for k in traits},
        )
        session.add(profile)
        anon = f"anon-{rng.getrandbits(48):012x}"
        ids = [("user_id", f"demo-{n:04d}"), ("email", email), ("anonymous_id", anon)]
        if rng.random() < 0.6:
            ids.append(("phone", f"{dial}{rng.randint(100_000_000, 999_999_999)}"))
        dependents.extend(
            Identifier(type=t, value=v, profile_id=profile.id, first_seen=created, last_seen=now)
            for t, v in ids
        )
        dependents.append(
            Consent(
                profile_id=profile.id,
                purpose="marketing",
                channel="email",
                status=rng.choice(["granted", "granted", "denied"]),
                source=DEMO_SOURCE,
                updated_at=created,
            )
        )
        dependents.extend(_events(rng, profile.id, f"demo-{n:04d}", anon, created, now))
    session.flush()
    session.add_all(dependents)
    return True


def _events(
    rng: random.Random, profile_id: str, user_id: str, anon: str, start: datetime, end: datetime
) -> list[Event]:
    events = []
    span = max(1, int((end - start).total_seconds()))
    for i in range(rng.randint(3, 25)):
        at = start + timedelta(seconds=rng.randint(0, span))
        kind = rng.choices(
            ["page", "Product Viewed", "Product Added", "Order Completed"], [6, 4, 2, 1]
        )[0]
        sku, title, category, price = rng.choice(PRODUCTS)
        if kind == "page":
            name, props = None, {"path": rng.choice(PAGES)}
        elif kind == "Order Completed":
            qty = rng.randint(1, 3)
            name, props = (
                kind,
                {
                    "order_id": f"o-{profile_id[:8]}-{i}",
                    "total": price * qty,
                    "currency": "EUR",
                    "products": [{"sku": sku, "quantity": qty}],
                },
            )
        else:
            name, props = kind, {"sku": sku, "name": title, "category": category, "price": price}
        message_id = f"demo-{profile_id}-{i}"
        payload = {
            "type": "page" if kind == "page" else "track",
            "messageId": message_id,
            "userId": user_id,
            "anonymousId": anon,
            "timestamp": at.isoformat(),
            "properties": props,
            **({"event": name} if name else {}),
        }
        events.append(
            Event(
                source=DEMO_SOURCE,
                message_id=message_id,
                type=payload["type"],
                name=name,
                profile_id=profile_id,
                user_id=user_id,
                anonymous_id=anon,
                timestamp=at,
                received_at=at,
                processed_at=at,
                payload=payload,
            )
        )
    return events
