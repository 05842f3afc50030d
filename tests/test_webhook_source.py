"""Records pushed to `POST /sources/{name}/webhook`: signed, mapped, ingested, rejected."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from conftest import make_config
from identity_helpers import identifiers, live_profiles
from source_helpers import events, rejects
from starlette.testclient import TestClient

from cdp.app import create_app
from cdp.config import ComponentEntry, EnvValue
from cdp.errors import ConfigError, UserError
from cdp.runtime import Runtime
from cdp.sources.spec import load_sources
from cdp.sources.sync import sync_source

SECRET = "s3cr3t-webhook-key"
ORDERS = {
    "identifiers": {"user_id": "customer", "email": "email"},
    "event": "Order Completed",
    "timestamp": "at",
    "properties": {"total": "total", "order_id": "id"},
}


def shop(**options) -> ComponentEntry:
    return ComponentEntry(
        name="shop",
        type="webhook",
        kind="events",
        mapping=ORDERS,
        secret=EnvValue(SECRET),
        records_path="data.orders",
        **options,
    )


@pytest.fixture
def app(database_url):
    runtime = Runtime.start(make_config(database_url, sources=[shop()]))
    with TestClient(create_app(runtime)) as client:
        yield client, runtime
    runtime.close()


def signed(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "X-CDP-Timestamp": stamp,
        "X-CDP-Signature": f"sha256={digest}",
        "content-type": "application/json",
    }


def orders(*rows: dict) -> bytes:
    return json.dumps({"data": {"orders": list(rows)}}).encode()


ORDER = {
    "id": "o-1",
    "customer": "c-42",
    "email": "Ada@Example.com",
    "total": 129.5,
    "at": "2026-03-01T12:00:00Z",
}


def test_signed_records_become_events_on_one_profile(app):
    client, runtime = app
    body = orders(ORDER, {**ORDER, "id": "o-2", "total": 19})
    response = client.post("/sources/shop/webhook", content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.json() == {"success": True, "accepted": 2, "duplicates": 0}
    stored = events(runtime, "shop")
    assert [(e.name, e.payload["properties"]["order_id"]) for e in stored] == [
        ("Order Completed", "o-1"),
        ("Order Completed", "o-2"),
    ]
    [profile] = live_profiles(runtime)
    assert {("user_id", "c-42"), ("email", "ada@example.com")} <= identifiers(runtime, profile.id)
    again = client.post("/sources/shop/webhook", content=body, headers=signed(body))
    assert again.json() == {"success": True, "accepted": 0, "duplicates": 2}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "unsigned: send X-CDP-Timestamp and X-CDP-Signature"),
        ("wrong-secret", "X-CDP-Signature: signature does not match"),
        ("stale", "X-CDP-Timestamp: not within 300 s of the server's clock"),
        ("tampered", "X-CDP-Signature: signature does not match"),
    ],
)
def test_unsigned_or_wrongly_signed_requests_are_refused(app, headers, message):
    client, runtime = app
    body = orders(ORDER)
    if headers == "wrong-secret":
        headers = signed(body, secret="guess")
    elif headers == "stale":
        headers = signed(body, at=int(time.time()) - 3600)
    elif headers == "tampered":
        headers = signed(body)
        body = body.replace(b"129.5", b"0.5")
    response = client.post("/sources/shop/webhook", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"].startswith(message)
    assert events(runtime, "shop") == []


def test_bad_records_are_rejected_and_the_rest_imported(app):
    client, runtime = app
    body = orders(ORDER, {"id": "o-3", "total": 5}, {**ORDER, "id": "o-4", "at": "yesterday"})
    response = client.post("/sources/shop/webhook", content=body, headers=signed(body))
    assert response.status_code == 400
    payload = response.json()
    assert payload["accepted"] == 1
    assert [e["index"] for e in payload["errors"]] == [1, 2]
    assert payload["errors"][0]["message"].startswith("mapping.identifiers: every identifier")
    assert [(r.row_number, r.location) for r in rejects(runtime, "shop")] == [
        (1, "webhook"),
        (2, "webhook"),
    ]


def test_malformed_bodies_and_unknown_sources(app):
    client, _ = app
    for body, message in [
        (b"{not json", "body: not valid JSON"),
        (json.dumps({"data": {}}).encode(), "body: no list of records at"),
        (orders("just text"), "body: record 0 is not a JSON object"),
        (b"[" * 100_000, "body: not valid JSON"),
    ]:
        response = client.post("/sources/shop/webhook", content=body, headers=signed(body))
        assert response.status_code == 400, body[:20]
        assert response.json()["errors"][0]["message"].startswith(message)
    missing = client.post("/sources/erp/webhook", content=b"{}", headers=signed(b"{}"))
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["message"] == "no webhook source is named 'erp'"


def test_secret_must_come_from_the_environment(database_url):
    entry = ComponentEntry(
        name="shop", type="webhook", kind="events", mapping=ORDERS, secret=SECRET
    )
    runtime = Runtime.start(make_config(database_url))
    try:
        with pytest.raises(ConfigError, match=r"sources\[0\]\.secret: .*secrets are not kept"):
            load_sources(make_config(database_url, sources=[entry]), runtime.plugins)
    finally:
        runtime.close()


def test_a_sync_of_a_webhook_source_says_there_is_nothing_to_pull(app):
    _, runtime = app
    with pytest.raises(UserError, match="receives its records at POST /sources/<name>/webhook"):
        sync_source(runtime, "shop")
