"""The collection API end to end: a real uvicorn server, real HTTP, the real Segment client, and
the database contents (events, profiles, identifiers, merges) on every backend."""

from __future__ import annotations

import base64
import gzip
import json
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from segment.analytics import Client as SegmentClient
from sqlalchemy import func, select

from cdp.db.models import (
    Consent,
    Event,
    Identifier,
    Merge,
    Profile,
    ProfileGroup,
)
from cdp.keys import Scope, create_key, revoke_key
from cdp.runtime import Runtime

PROFILE_QUERY = """query($identifier: IdentifierInput) {
  profile(identifier: $identifier) { id traits identifiers { type value } }
}"""


# --- helpers --------------------------------------------------------------------------------


def basic(key: str) -> dict[str, str]:
    """The header Segment's libraries send: the write key as the Basic user, no password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield client


@pytest.fixture
def collect_key(api_keys: dict[str, str]) -> str:
    return api_keys["collect"]


def post(
    http: httpx.Client,
    path: str,
    body: Any,
    key: str | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(basic(key) if key else {})}
    return http.post(path, content=content, headers={**all_headers, **(headers or {})})


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def track(message_id: str | None, user_id: str = "u-1", **fields: Any) -> dict[str, Any]:
    message = {"type": "track", "userId": user_id, "event": "Order Completed", **fields}
    if message_id is not None:
        message["messageId"] = message_id
    return message


def all_events(runtime: Runtime) -> list[Event]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def event_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Event)) or 0


def profile_by(runtime: Runtime, type_: str, value: str) -> Profile | None:
    with runtime.sessions() as session:
        profile_id = session.scalar(
            select(Identifier.profile_id).where(Identifier.type == type_, Identifier.value == value)
        )
        return session.get(Profile, profile_id) if profile_id else None


def identifiers_of(runtime: Runtime, profile_id: str) -> set[tuple[str, str]]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Identifier.type, Identifier.value).where(Identifier.profile_id == profile_id)
        )
        return {(r.type, r.value) for r in rows}


def live_profiles(runtime: Runtime) -> list[Profile]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(Profile).where(Profile.merged_into.is_(None)).order_by(Profile.id)
            )
        )


def merges(runtime: Runtime) -> list[Merge]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Merge).order_by(Merge.id)))


def errors_of(response: httpx.Response) -> list[tuple[int | None, str | None]]:
    return [(e["index"], e["field"]) for e in response.json()["errors"]]


# --- 1. the real Segment client, unchanged --------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"sync_mode": True}, id="sync"),
        pytest.param(
            {"sync_mode": False, "gzip": True, "upload_interval": 0.05}, id="batched-gzip"
        ),
    ],
)
def test_segment_client_unchanged(runtime, live_server, http, api_keys, options):
    failures: list[tuple[Exception, list]] = []
    client = SegmentClient(
        write_key=api_keys["collect"],
        host=live_server,
        on_error=lambda exc, batch: failures.append((exc, batch)),
        max_retries=1,
        timeout=10,
        **options,
    )

    def consent() -> dict[str, Any]:
        return {
            "consent": {"categoryPreferences": {"marketing": True, "advertising": False}},
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0",
        }

    sent = [
        client.page(
            anonymous_id="anon-1",
            category="Docs",
            name="Pricing",
            properties={"path": "/pricing", "url": "https://example.com/pricing"},
            context=consent(),
        ),
        client.screen(anonymous_id="anon-1", name="Home", properties={"variant": "b"}),
        client.identify(
            user_id="user-1",
            anonymous_id="anon-1",
            traits={"email": "Ada.Lovelace@Example.COM", "name": "Ada Lovelace", "plan": "pro"},
            context=consent(),
        ),
        client.track(
            user_id="user-1",
            event="Order Completed",
            properties={"order_id": "o-9", "total": 27.5, "products": [{"sku": "a-1"}]},
        ),
        client.group(user_id="user-1", group_id="acme", traits={"name": "Acme", "employees": 42}),
        client.alias(previous_id="anon-2", user_id="user-1"),
    ]
    client.flush()
    if not options["sync_mode"]:
        client.join()  # stops the consumer thread (sync mode has none)

    assert failures == []
    assert all(ok for ok, _ in sent)
    rows = all_events(runtime)
    assert [(r.type, r.name, r.message_id) for r in rows] == [
        ("page", "Pricing", sent[0][1]["messageId"]),
        ("screen", "Home", sent[1][1]["messageId"]),
        ("identify", None, sent[2][1]["messageId"]),
        ("track", "Order Completed", sent[3][1]["messageId"]),
        ("group", None, sent[4][1]["messageId"]),
        ("alias", None, sent[5][1]["messageId"]),
    ]
    profile = profile_by(runtime, "user_id", "user-1")
    assert profile is not None
    assert [(r.profile_id, r.error) for r in rows] == [(profile.id, None)] * 6
    assert all(r.processed_at is not None for r in rows)
    assert all(r.source == "test collect" for r in rows)  # the key's name
    assert rows[0].payload["context"]["library"]["name"] == "analytics-python"
    assert rows[3].payload["properties"] == {
        "order_id": "o-9",
        "total": 27.5,
        "products": [{"sku": "a-1"}],
    }
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=1) < r.timestamp <= now for r in rows)

    assert identifiers_of(runtime, profile.id) == {
        ("user_id", "user-1"),
        ("anonymous_id", "anon-1"),
        ("anonymous_id", "anon-2"),
        ("email", "ada.lovelace@example.com"),
    }
    assert profile.traits == {
        "email": "Ada.Lovelace@Example.COM",
        "name": "Ada Lovelace",
        "plan": "pro",
    }
    assert [p.id for p in live_profiles(runtime)] == [profile.id]
    with runtime.sessions() as session:
        consents = session.execute(
            select(Consent.purpose, Consent.channel, Consent.status).where(
                Consent.profile_id == profile.id
            )
        ).all()
        group = session.get(ProfileGroup, (profile.id, "acme"))
    assert sorted(tuple(c) for c in consents) == [
        ("advertising", "*", "denied"),
        ("marketing", "*", "granted"),
    ]
    assert group is not None and group.traits == {"name": "Acme", "employees": 42}

    # The same profile through GraphQL, looked up by the normalised e-mail with a read key.
    response = http.post(
        "/graphql",
        json={
            "query": PROFILE_QUERY,
            "variables": {"identifier": {"type": "email", "value": "ada.lovelace@example.com"}},
        },
        headers={"Authorization": f"Bearer {api_keys['read']}"},
    )
    assert response.status_code == 200
    found = response.json()["data"]["profile"]
    assert found["id"] == profile.id
    assert found["traits"] == profile.traits
    assert {(i["type"], i["value"]) for i in found["identifiers"]} == identifiers_of(
        runtime, profile.id
    )


def test_segment_client_sees_rejections_through_on_error(runtime, live_server, api_keys):
    # A read key cannot collect: the client's on_error hears the 403, nothing is stored.
    failures: list[Exception] = []
    client = SegmentClient(
        write_key=api_keys["read"],
        host=live_server,
        on_error=lambda exc, batch: failures.append(exc),
        max_retries=0,
        upload_interval=0.05,
    )
    client.track(user_id="u-1", event="Signed Up")
    client.flush()
    client.join()
    assert [getattr(e, "status", None) for e in failures] == [403]
    assert event_count(runtime) == 0


def test_concurrent_requests_are_each_stored_once(runtime, http, collect_key):
    # Many requests at once share group-commit transactions; each user still gets one profile.
    def send(thread: int) -> list[dict[str, Any]]:
        results = []
        for request in range(4):
            batch = [
                {
                    "type": "identify" if n % 2 else "track",
                    "event": "Seen",
                    "userId": f"u-{n % 10}",
                    "anonymousId": f"a-{n % 10}-{thread}",
                    "context": {"traits": {"email": f"U{n % 10}@Example.com"}},
                    "messageId": f"m-{thread}-{request}-{n}",
                }
                for n in range(20)
            ]
            results.append(post(http, "/v1/batch", {"batch": batch}, collect_key).json())
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for rs in pool.map(send, range(8)) for r in rs]
    assert results == [{"success": True, "accepted": 20, "duplicates": 0}] * 32
    rows = all_events(runtime)
    assert len(rows) == 640 and len({r.message_id for r in rows}) == 640
    assert all(r.processed_at is not None and r.error is None for r in rows)
    profiles = live_profiles(runtime)
    assert len(profiles) == 10
    assert merges(runtime) == []
    for k in range(10):
        profile = profile_by(runtime, "user_id", f"u-{k}")
        assert profile is not None
        assert identifiers_of(runtime, profile.id) == {
            ("user_id", f"u-{k}"),
            ("email", f"u{k}@example.com"),
            *(("anonymous_id", f"a-{k}-{t}") for t in range(8)),
        }


# --- 2. idempotency -------------------------------------------------------------------------


def test_replayed_batch_is_acknowledged_and_not_stored_again(runtime, http, collect_key):
    body = {
        "batch": [track("m-1"), track("m-2", event="Cart Viewed"), track("m-3")],
        "sentAt": iso(datetime.now(UTC)),
    }
    first = post(http, "/v1/batch", body, collect_key)
    assert first.status_code == 200
    assert first.json() == {"success": True, "accepted": 3, "duplicates": 0}
    before = [(e.id, e.message_id, e.profile_id) for e in all_events(runtime)]

    # A client retry: same messages, a new sentAt.
    body["sentAt"] = iso(datetime.now(UTC))
    second = post(http, "/v1/batch", body, collect_key)
    assert second.status_code == 200
    assert second.json() == {"success": True, "accepted": 0, "duplicates": 3}
    assert [(e.id, e.message_id, e.profile_id) for e in all_events(runtime)] == before
    assert len(before) == 3


def test_replay_without_message_ids_is_still_a_duplicate(runtime, http, collect_key):
    # No messageId: one is derived from the content (sentAt left out, as clients reset it).
    stamp = iso(datetime.now(UTC) - timedelta(seconds=5))
    messages = [track(None, timestamp=stamp), track(None, user_id="u-2", timestamp=stamp)]
    first = {"batch": messages, "sentAt": iso(datetime.now(UTC))}
    assert post(http, "/v1/batch", first, collect_key).json() == {
        "success": True,
        "accepted": 2,
        "duplicates": 0,
    }
    retry = {"batch": messages, "sentAt": iso(datetime.now(UTC) + timedelta(seconds=1))}
    assert post(http, "/v1/batch", retry, collect_key).json() == {
        "success": True,
        "accepted": 0,
        "duplicates": 2,
    }
    assert event_count(runtime) == 2
    assert all(e.message_id.startswith("sha256:") for e in all_events(runtime))
    # Single-message endpoint too.
    single = track(None, user_id="u-3", timestamp=stamp)
    assert post(http, "/v1/track", single, collect_key).json()["accepted"] == 1
    assert post(http, "/v1/track", single, collect_key).json() == {
        "success": True,
        "accepted": 0,
        "duplicates": 1,
    }
    assert event_count(runtime) == 3


def test_same_message_id_twice_in_one_batch_counts_once(runtime, http, collect_key):
    body = {"batch": [track("m-dup", properties={"n": 1}), track("m-dup", properties={"n": 2})]}
    response = post(http, "/v1/batch", body, collect_key)
    assert response.status_code == 200
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 1}
    rows = all_events(runtime)
    assert [(r.message_id, r.payload["properties"]) for r in rows] == [("m-dup", {"n": 1})]


def test_message_ids_are_per_source(runtime, http, api_keys):
    # Two keys (sources) may use the same messageId without colliding.
    with runtime.transaction() as session:
        other = create_key(session, frozenset({Scope.COLLECT}), "mobile app")[1]
    body = {"batch": [track("m-1")]}
    assert post(http, "/v1/batch", body, api_keys["collect"]).json()["accepted"] == 1
    assert post(http, "/v1/batch", body, other).json()["accepted"] == 1
    assert sorted(e.source for e in all_events(runtime)) == ["mobile app", "test collect"]


# --- 3. authentication ----------------------------------------------------------------------


def test_missing_key_is_401_with_basic_challenge(runtime, http):
    response = post(http, "/v1/track", track("m-1"), None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["success"] is False
    assert "write key" in response.json()["errors"][0]["message"]
    assert event_count(runtime) == 0


def test_unknown_and_revoked_keys_are_401(runtime, http):
    with runtime.transaction() as session:
        row, key = create_key(session, frozenset({Scope.COLLECT}), "old")
    assert post(http, "/v1/track", track("m-1"), key).status_code == 200
    with runtime.transaction() as session:
        revoke_key(session, str(row.id))
    for bad in (key, "cdp_not-a-real-key", "wk_segment_style", "x" * 5000):
        response = post(http, "/v1/track", track("m-2"), bad)
        assert response.status_code == 401, bad
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert response.json()["errors"][0]["message"] == "invalid or revoked write key"
    assert event_count(runtime) == 1


def test_read_key_is_403_admin_key_collects(runtime, http, api_keys):
    response = post(http, "/v1/batch", {"batch": [track("m-1")]}, api_keys["read"])
    assert response.status_code == 403
    assert "collect" in response.json()["errors"][0]["message"]
    assert event_count(runtime) == 0
    response = post(http, "/v1/batch", {"batch": [track("m-1")]}, api_keys["admin"])
    assert response.status_code == 200
    assert event_count(runtime) == 1


def test_write_key_in_body(runtime, http, collect_key):
    # analytics.js style: no Authorization header, the key in the body.
    body = {"batch": [track("m-1")], "writeKey": collect_key}
    response = post(http, "/v1/batch", body, None)
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    response = post(http, "/v1/identify", {"userId": "u-9", "writeKey": collect_key}, None)
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    # A bad key in the body is refused like one in the header.
    response = post(http, "/v1/batch", {"batch": [track("m-2")], "writeKey": "cdp_nope"}, None)
    assert response.status_code == 401
    assert event_count(runtime) == 2


JUNK_HEADERS = [
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"\xff\xfe\xfd:").decode(),  # not UTF-8
    "Basic " + base64.b64encode(b":password-only").decode(),
    "Basic",
    "Bearer something",
]


def test_junk_authorization_header_is_401_not_500(runtime, http):
    for header in JUNK_HEADERS:
        headers = {"Authorization": header}
        response = http.post("/v1/track", content=json.dumps(track("m-1")), headers=headers)
        assert response.status_code == 401, header
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert event_count(runtime) == 0


# --- 4. bad input ---------------------------------------------------------------------------


MALFORMED = [
    ("/v1/batch", b'{"batch": [', "(body)", "not valid JSON"),
    ("/v1/track", b'{"userId": "u", "event": }', "(body)", "not valid JSON"),
    ("/v1/batch", b"[1, 2]", "(body)", "must be a JSON object, not array"),
    ("/v1/track", b'"hello"', "(body)", "must be a JSON object, not string"),
    ("/v1/batch", b"{}", "batch", "is required"),
    ("/v1/batch", b'{"batch": {}}', "batch", "must be an array, not object"),
    ("/v1/batch", b'{"batch": []}', "batch", "must not be empty"),
    ("/v1/batch", b'{"batch": [1], "sentAt": "yesterday"}', "sentAt", "ISO-8601"),
    ("/v1/batch", b"\xff\xfe{}", "(body)", "is not valid UTF-8"),
    ("/v1/batch", b'{"batch": [{"type": "track", "x": NaN}]}', "(body)", "NaN"),
    ("/v1/batch", b'{"batch": [{"type": "track", "x": 1e999}]}', "(body)", "out of range"),
    ("/v1/track", b"", "(body)", "not valid JSON"),
]


def test_malformed_bodies_are_400_naming_the_field(runtime, http, collect_key):
    for path, body, field, message in MALFORMED:
        response = post(http, path, body, collect_key)
        assert response.status_code == 400, body
        payload = response.json()
        assert payload["success"] is False and payload["accepted"] == 0
        assert errors_of(response) == [(None, field)], body
        assert message in payload["errors"][0]["message"], body
    assert event_count(runtime) == 0


def test_batch_over_500_kb_is_413_and_nothing_stored(runtime, http, collect_key):
    filler = "x" * 20_000
    batch = [track(f"m-{i}", properties={"filler": filler}) for i in range(30)]  # ~600 KB
    body = json.dumps({"batch": batch}).encode()
    assert len(body) > 500 * 1024
    response = post(http, "/v1/batch", body, collect_key)
    assert response.status_code == 413
    assert response.json()["success"] is False
    assert "500 KB" in response.json()["errors"][0]["message"]
    # Without Content-Length (chunked), the limit holds while streaming.
    response = http.post(
        "/v1/batch",
        content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        headers=basic(collect_key),
    )
    assert response.status_code == 413
    assert event_count(runtime) == 0


def test_single_message_over_32_kb(runtime, http, collect_key):
    big = track("m-big", properties={"filler": "x" * 40_000})
    response = post(http, "/v1/track", big, collect_key)
    assert response.status_code == 413
    assert "32 KB" in response.json()["errors"][0]["message"]
    # Inside a batch it is that message's error; its neighbours are stored.
    response = post(http, "/v1/batch", {"batch": [track("m-ok"), big]}, collect_key)
    assert response.status_code == 400
    assert response.json()["accepted"] == 1
    assert errors_of(response) == [(1, "(message)")]
    assert "limit is 32768 bytes" in response.json()["errors"][0]["message"]
    assert [e.message_id for e in all_events(runtime)] == ["m-ok"]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track"])
def test_deeply_nested_json_is_400_not_500(runtime, http, collect_key, path):
    deep = "[" * 10_000 + "]" * 10_000
    message = f'{{"type": "track", "userId": "u", "event": "e", "properties": {{"a": {deep}}}}}'
    body = f'{{"batch": [{message}]}}' if path == "/v1/batch" else message
    started = time.monotonic()
    response = post(http, path, body.encode(), collect_key)
    assert response.status_code == 400
    assert errors_of(response) == [(None, "(body)")]
    assert "nests deeper than" in response.json()["errors"][0]["message"]
    assert time.monotonic() - started < 5
    # The server is still fine.
    assert (
        post(
            http,
            path,
            track("m-after") if path == "/v1/track" else {"batch": [track("m-after")]},
            collect_key,
        ).status_code
        == 200
    )


def test_moderately_nested_message_is_refused_alone(runtime, http, collect_key):
    nested: Any = "leaf"
    for _ in range(40):
        nested = {"n": nested}
    batch = [track("m-ok"), track("m-deep", properties={"tree": nested})]
    response = post(http, "/v1/batch", {"batch": batch}, collect_key)
    assert response.status_code == 400
    assert response.json()["accepted"] == 1
    assert errors_of(response) == [(1, "properties")]
    assert "nests deeper than 32 levels" in response.json()["errors"][0]["message"]


def test_field_errors_name_index_and_field(runtime, http, collect_key):
    now = datetime.now(UTC)
    batch = [
        {"type": "track", "event": "No Ids"},
        {"type": "track", "userId": {"id": 1}, "event": "x"},
        {"type": "track", "userId": "u", "event": 42},
        {"type": "identify", "userId": "u", "traits": ["a"]},
        {"type": "track", "userId": "u", "event": "e", "timestamp": 12345},
        {"type": "page", "anonymousId": "a", "timestamp": iso(now + timedelta(days=2))},
        {"type": "bogus", "userId": "u"},
        {
            "type": "identify",
            "userId": "u",
            "context": {"consent": {"categoryPreferences": {"ads": "yes"}}},
        },
        {"type": "group", "userId": "u"},
        {"type": "alias", "previousId": "p"},
        {"type": "track", "userId": "u", "event": "e", "timestamp": "last tuesday"},
        "not an object",
    ]
    response = post(http, "/v1/batch", {"batch": batch}, collect_key)
    assert response.status_code == 400
    payload = response.json()
    assert payload["success"] is False and payload["accepted"] == 0
    assert errors_of(response) == [
        (0, "userId"),
        (1, "userId"),
        (2, "event"),
        (3, "traits"),
        (4, "timestamp"),
        (5, "timestamp"),
        (6, "type"),
        (7, "context.consent.categoryPreferences.ads"),
        (8, "groupId"),
        (9, "userId"),
        (10, "timestamp"),
        (11, "(message)"),
    ]
    messages = [e["message"] for e in payload["errors"]]
    assert messages[1] == "batch[1].userId: must be a string, not object"
    assert messages[3] == "batch[3].traits: must be an object, not array"
    assert "far-future" in messages[5]
    assert messages[11] == "batch[11]: must be an object, not string"
    assert event_count(runtime) == 0


def test_single_endpoint_errors_have_no_index(runtime, http, collect_key):
    response = post(http, "/v1/track", {"userId": "u"}, collect_key)
    assert response.status_code == 400
    assert errors_of(response) == [(None, "event")]
    assert response.json()["errors"][0]["message"] == "event: is required"
    response = post(http, "/v1/identify", {"type": "track", "userId": "u"}, collect_key)
    assert errors_of(response) == [(None, "type")]
    assert event_count(runtime) == 0


def test_good_messages_in_a_bad_batch_are_stored_and_applied(runtime, http, collect_key):
    batch = [
        {"type": "identify", "userId": "u-1", "traits": {"email": "one@example.com"}},
        {"type": "track", "event": "Orphan"},  # no id
        {"type": "identify", "userId": "u-2", "traits": {"plan": "free"}},
        {"type": "group", "userId": "u-2", "groupId": {"bad": True}},
        {"type": "track", "userId": "u-1", "event": "Paid", "context": {"traits": {"vip": True}}},
    ]
    response = post(http, "/v1/batch", {"batch": batch}, collect_key)
    assert response.status_code == 400
    payload = response.json()
    assert payload["accepted"] == 3 and payload["duplicates"] == 0
    assert payload["success"] is False
    assert errors_of(response) == [(1, "userId"), (3, "groupId")]
    rows = all_events(runtime)
    assert [(r.type, r.user_id) for r in rows] == [
        ("identify", "u-1"),
        ("identify", "u-2"),
        ("track", "u-1"),
    ]
    assert all(r.processed_at is not None and r.error is None for r in rows)
    one, two = profile_by(runtime, "user_id", "u-1"), profile_by(runtime, "user_id", "u-2")
    assert one is not None and two is not None
    assert one.traits == {"email": "one@example.com", "vip": True}
    assert two.traits == {"plan": "free"}
    assert [r.profile_id for r in rows] == [one.id, two.id, one.id]


def test_gzip_and_deflate_bodies(runtime, http, collect_key):
    body = json.dumps({"batch": [track("m-gz")]}).encode()
    response = post(
        http, "/v1/batch", gzip.compress(body), collect_key, {"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200 and response.json()["accepted"] == 1
    deflated = zlib.compress(json.dumps(track("m-deflate")).encode())
    response = post(http, "/v1/track", deflated, collect_key, {"Content-Encoding": "deflate"})
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert [e.message_id for e in all_events(runtime)] == ["m-gz", "m-deflate"]


def test_gzip_header_on_a_plain_body_is_400(runtime, http, collect_key):
    body = json.dumps({"batch": [track("m-1")]}).encode()
    response = post(http, "/v1/batch", body, collect_key, {"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "body is not valid gzip data"
    response = post(http, "/v1/batch", body, collect_key, {"Content-Encoding": "br"})
    assert response.status_code == 415
    assert event_count(runtime) == 0


def test_gzip_bomb_is_413_quickly(runtime, http, collect_key):
    bomb = gzip.compress(b"0" * 50_000_000, compresslevel=9)
    assert len(bomb) < 100_000
    started = time.monotonic()
    response = post(http, "/v1/batch", bomb, collect_key, {"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decoded request body over the 500 KB limit" in response.json()["errors"][0]["message"]
    assert time.monotonic() - started < 5
    assert event_count(runtime) == 0


def test_unknown_endpoint_and_method(runtime, http, collect_key):
    response = post(http, "/v1/foo", {"batch": [track("m-1")]}, collect_key)
    assert response.status_code == 404
    assert response.json()["errors"][0]["message"] == "unknown endpoint /v1/foo"
    assert http.get("/v1/batch", headers=basic(collect_key)).status_code == 405
    assert event_count(runtime) == 0


def test_import_is_an_alias_of_batch(runtime, http, collect_key):
    response = post(http, "/v1/import", {"batch": [track("m-imp")]}, collect_key)
    assert response.status_code == 200
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 0}


def test_unknown_fields_are_kept(runtime, http, collect_key):
    message = track(
        "m-extra",
        customTopLevel={"nested": [1, 2, {"deep": "yes"}]},
        properties={"price": 9.99},
        context={"library": {"name": "rudder-sdk-python"}, "vendorThing": "kept"},
        _metadata={"bundled": ["Segment.io"]},
    )
    response = post(http, "/v1/batch", {"batch": [message], "extraEnvelope": 1}, collect_key)
    assert response.status_code == 200
    (row,) = all_events(runtime)
    assert row.payload["customTopLevel"] == {"nested": [1, 2, {"deep": "yes"}]}
    assert row.payload["_metadata"] == {"bundled": ["Segment.io"]}
    assert row.payload["context"]["vendorThing"] == "kept"
    assert row.payload["properties"] == {"price": 9.99}
    assert row.payload["messageId"] == "m-extra" and row.payload["type"] == "track"


def test_batch_context_is_folded_into_each_message(runtime, http, collect_key):
    body = {
        "batch": [track("m-1", context={"page": {"path": "/a"}}), track("m-2")],
        "context": {"library": {"name": "batch-lib"}, "page": {"path": "/batch"}},
    }
    assert post(http, "/v1/batch", body, collect_key).status_code == 200
    first, second = all_events(runtime)
    assert first.payload["context"] == {"library": {"name": "batch-lib"}, "page": {"path": "/a"}}
    assert second.payload["context"] == {
        "library": {"name": "batch-lib"},
        "page": {"path": "/batch"},
    }


# --- 5. timestamps --------------------------------------------------------------------------


def test_client_clock_skew_is_corrected(runtime, http, collect_key):
    # The client's clock is an hour fast; the event happened 30 s before the batch was sent.
    client_now = datetime.now(UTC) + timedelta(hours=1)
    happened = client_now - timedelta(seconds=30)
    body = {"batch": [track("m-skew", timestamp=iso(happened))], "sentAt": iso(client_now)}
    before = datetime.now(UTC)
    response = post(http, "/v1/batch", body, collect_key)
    after = datetime.now(UTC)
    assert response.status_code == 200 and response.json()["accepted"] == 1
    (row,) = all_events(runtime)
    assert before <= row.received_at <= after
    assert row.timestamp == row.received_at - timedelta(seconds=30)
    assert row.original_timestamp == happened
    assert row.sent_at == client_now
    assert row.payload["timestamp"] == iso(happened)  # the payload keeps the client's value


def test_message_sent_at_wins_over_batch_sent_at(runtime, http, collect_key):
    client_now = datetime.now(UTC) - timedelta(days=3)  # a slow clock this time
    happened = client_now - timedelta(minutes=5)
    message = track("m-1", timestamp=iso(happened), sentAt=iso(client_now))
    body = {"batch": [message], "sentAt": iso(datetime.now(UTC))}
    assert post(http, "/v1/batch", body, collect_key).status_code == 200
    (row,) = all_events(runtime)
    assert row.timestamp == row.received_at - timedelta(minutes=5)
    assert row.sent_at == client_now


def test_no_sent_at_trusts_timestamp_and_no_timestamp_uses_received_at(runtime, http, collect_key):
    happened = datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=UTC)
    body = {"batch": [track("m-old", timestamp=iso(happened)), track("m-now")]}
    assert post(http, "/v1/batch", body, collect_key).status_code == 200
    old, now = all_events(runtime)
    assert old.timestamp == happened and old.original_timestamp == happened
    assert now.timestamp == now.received_at and now.original_timestamp is None


def test_far_future_after_correction_is_refused(runtime, http, collect_key):
    now = datetime.now(UTC)
    body = {"batch": [track("m-1", timestamp=iso(now + timedelta(hours=3)))]}
    response = post(http, "/v1/batch", body, collect_key)
    assert response.status_code == 400
    assert errors_of(response) == [(0, "timestamp")]
    # The same timestamp is fine from a client whose clock is 3 hours fast.
    body["sentAt"] = iso(now + timedelta(hours=3, seconds=1))
    response = post(http, "/v1/batch", body, collect_key)
    assert response.status_code == 200
    assert event_count(runtime) == 1


# --- 6. identity through the API ------------------------------------------------------------


def test_identity_resolution_through_the_api(runtime, http, collect_key):
    t0 = datetime.now(UTC) - timedelta(hours=2)

    def at(minutes: int) -> str:
        return iso(t0 + timedelta(minutes=minutes))

    def send(*messages: dict[str, Any]) -> None:
        response = post(http, "/v1/batch", {"batch": list(messages)}, collect_key)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(messages)

    # Laptop: anonymous page views.
    send(
        {"type": "page", "anonymousId": "anon-laptop", "name": "Home", "timestamp": at(0)},
        {"type": "page", "anonymousId": "anon-laptop", "name": "Pricing", "timestamp": at(1)},
    )
    laptop = profile_by(runtime, "anonymous_id", "anon-laptop")
    # Phone: the person signs up.
    send(
        {
            "type": "identify",
            "userId": "user-ada",
            "anonymousId": "anon-phone",
            "traits": {"email": "Ada@Example.com", "name": "Ada"},
            "timestamp": at(2),
        }
    )
    phone = profile_by(runtime, "user_id", "user-ada")
    assert laptop is not None and phone is not None and laptop.id != phone.id
    assert len(live_profiles(runtime)) == 2

    # Laptop: the person logs in. Both profiles are one person: merged into the older one.
    send(
        {"type": "identify", "userId": "user-ada", "anonymousId": "anon-laptop", "timestamp": at(3)}
    )
    (survivor,) = live_profiles(runtime)
    assert survivor.id == laptop.id
    assert survivor.traits == {"email": "Ada@Example.com", "name": "Ada"}
    assert identifiers_of(runtime, survivor.id) == {
        ("anonymous_id", "anon-laptop"),
        ("anonymous_id", "anon-phone"),
        ("user_id", "user-ada"),
        ("email", "ada@example.com"),
    }
    (merge,) = merges(runtime)
    assert (merge.kind, merge.survivor_id, merge.merged_id) == ("merge", laptop.id, phone.id)
    assert "user_id=user-ada" in merge.reason
    assert {e.profile_id for e in all_events(runtime)} == {survivor.id}

    # A later event carrying only the e-mail (another case, padded) on a new device.
    send(
        {
            "type": "track",
            "anonymousId": "anon-tablet",
            "event": "Newsletter Opened",
            "properties": {"email": "  ADA@example.COM "},
            "timestamp": at(4),
        }
    )
    assert profile_by(runtime, "anonymous_id", "anon-tablet").id == survivor.id

    # Someone else logs in on the laptop: same anonymousId, another userId. Not merged.
    send(
        {
            "type": "identify",
            "userId": "user-bob",
            "anonymousId": "anon-laptop",
            "traits": {"name": "Bob"},
            "timestamp": at(5),
        }
    )
    bob = profile_by(runtime, "user_id", "user-bob")
    assert bob is not None and bob.id != survivor.id
    assert bob.traits == {"name": "Bob"}
    assert identifiers_of(runtime, bob.id) == {("user_id", "user-bob")}
    assert identifiers_of(runtime, survivor.id) == {
        ("anonymous_id", "anon-laptop"),
        ("anonymous_id", "anon-phone"),
        ("anonymous_id", "anon-tablet"),
        ("user_id", "user-ada"),
        ("email", "ada@example.com"),
    }
    assert profile_by(runtime, "user_id", "user-ada").traits == {  # type: ignore[union-attr]
        "email": "Ada@Example.com",
        "name": "Ada",
    }
    assert sorted(p.id for p in live_profiles(runtime)) == sorted([survivor.id, bob.id])
    assert len(merges(runtime)) == 1
    last = all_events(runtime)[-1]
    assert (last.user_id, last.profile_id) == ("user-bob", bob.id)


# --- compatibility with analytics.js --------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/t", "/v1/b"])
def test_analytics_js_short_paths(runtime, http, collect_key, path):
    message = {**track("m-ajs"), "writeKey": collect_key}
    body = {"batch": [message], "writeKey": collect_key} if path == "/v1/b" else message
    # analytics.js sends text/plain (no CORS preflight) with the key in the body.
    response = http.post(path, content=json.dumps(body), headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert event_count(runtime) == 1


def test_write_key_is_not_stored_in_the_payload(runtime, http, collect_key):
    response = post(http, "/v1/track", {**track("m-1"), "writeKey": collect_key}, None)
    assert response.status_code == 200
    batch = {"batch": [{**track("m-2"), "writeKey": collect_key}], "writeKey": collect_key}
    assert post(http, "/v1/batch", batch, None).status_code == 200
    rows = all_events(runtime)
    assert len(rows) == 2
    # A credential (analytics.js puts it in every message): used, never stored.
    assert all(collect_key not in json.dumps(r.payload) for r in rows)
    assert all("writeKey" not in r.payload for r in rows)


def test_browser_requests_get_cors_headers(runtime, http, collect_key):
    message = {**track("m-cors"), "writeKey": collect_key}
    headers = {"Content-Type": "text/plain", "Origin": "https://shop.example.com"}
    response = http.post("/v1/track", content=json.dumps(message), headers=headers)
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", "https://shop.example.com")


# --- gzip stream integrity ------------------------------------------------------------------


def test_truncated_or_padded_gzip_is_refused(runtime, http, collect_key):
    body = gzip.compress(json.dumps({"batch": [track("m-1")]}).encode())
    for bad in (body[:-8], body + b"junk"):
        response = post(http, "/v1/batch", bad, collect_key, {"Content-Encoding": "gzip"})
        assert response.status_code == 400
    assert event_count(runtime) == 0


def test_multi_member_gzip_is_decoded_whole(runtime, http, collect_key):
    body = json.dumps({"batch": [track("m-1")]}).encode()
    two_members = gzip.compress(body[:20]) + gzip.compress(body[20:])
    assert gzip.decompress(two_members) == body
    response = post(http, "/v1/batch", two_members, collect_key, {"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert event_count(runtime) == 1


# --- messages without messageId -------------------------------------------------------------


def test_identical_events_without_message_id_or_timestamp_are_both_kept(runtime, http, collect_key):
    # Nothing tells a retry from a new event with the same content, so both are kept.
    heartbeat = {"userId": "server-7", "event": "Heartbeat"}
    assert post(http, "/v1/track", heartbeat, collect_key).json()["accepted"] == 1
    assert post(http, "/v1/track", heartbeat, collect_key).json()["accepted"] == 1
    assert event_count(runtime) == 2


def test_error_list_is_capped_but_counted(http, collect_key):
    response = post(http, "/v1/batch", {"batch": [{}] * 5000}, collect_key)
    assert response.status_code == 400
    payload = response.json()
    assert payload["errorCount"] == 10_000  # each `{}` lacks its type and its userId
    assert len(payload["errors"]) == 100
    assert [e["index"] for e in payload["errors"][:4]] == [0, 0, 1, 1]
