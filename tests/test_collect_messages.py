from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cdp.collect.messages import (
    MAX_BATCH_BYTES,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    FieldError,
    Message,
    MessageError,
    derive_message_id,
    parse_batch,
    parse_message,
    parse_single,
)
from cdp.errors import UserError

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SENT_AT = "2024-05-01T11:59:59.500000+00:00"  # what analytics-python's request.post() adds
CLIENT_TS = "2024-05-01T11:59:58.123+00:00"  # isoformat(timespec='milliseconds')
LIBRARY = {"name": "analytics-python", "version": "2.3.3"}


# --- payloads shaped as the official clients send them ----------------------------------------


def py_message(type_: str, message_id: str, **fields: Any) -> dict[str, Any]:
    """A message as segment-analytics-python's Client._enqueue leaves it (None kept as null)."""
    message = {
        "integrations": {},
        "anonymousId": None,
        "timestamp": CLIENT_TS,
        "context": {"library": dict(LIBRARY)},
        "type": type_,
        "userId": None,
        "messageId": message_id,
    }
    message.update(fields)
    return message


def py_batch(*messages: dict[str, Any], **envelope: Any) -> bytes:
    # analytics-python serialises with json.dumps defaults: ", " and ": " separators.
    body = {"batch": list(messages), "sentAt": SENT_AT, "writeKey": "wk_123", **envelope}
    return json.dumps(body).encode()


def every_type() -> list[dict[str, Any]]:
    return [
        py_message(
            "identify",
            "m-identify",
            userId="u-1",
            traits={"email": "ada@example.com", "plan": "pro"},
        ),
        py_message(
            "track",
            "m-track",
            userId="u-1",
            event="Order Completed",
            properties={"order_id": "o-9", "total": 27.5, "products": [{"sku": "a-1"}]},
        ),
        py_message(
            "page",
            "m-page",
            anonymousId="anon-7",
            category="Docs",
            name="Pricing",
            properties={"path": "/pricing"},
        ),
        py_message(
            "screen",
            "m-screen",
            userId="u-1",
            category=None,
            name="Home",
            properties={},
        ),
        py_message(
            "group",
            "m-group",
            userId="u-1",
            groupId="acme",
            traits={"name": "Acme Inc", "employees": 40},
        ),
        py_message("alias", "m-alias", userId="u-1", previousId="anon-7"),
    ]


def ajs_page_body() -> bytes:
    """One page call as analytics.js (analytics-next) posts it, message-level sentAt included."""
    return json.dumps(
        {
            "timestamp": "2024-05-01T11:59:57.900Z",
            "integrations": {},
            "type": "page",
            "properties": {
                "path": "/pricing",
                "referrer": "",
                "search": "",
                "title": "Pricing",
                "url": "https://shop.example/pricing",
            },
            "name": "Pricing",
            "context": {
                "page": {"path": "/pricing", "url": "https://shop.example/pricing"},
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
                "locale": "fr-FR",
                "library": {"name": "analytics.js", "version": "next-1.70.0"},
                "consent": {"categoryPreferences": {"Advertising": False, "Analytics": True}},
            },
            "messageId": "ajs-next-1714564797900-6b1c",
            "anonymousId": "0b8a6c55-4f1e-4ad1-9a7e-8c4d7f5b0e11",
            "userId": None,
            "writeKey": "wk_123",
            "sentAt": "2024-05-01T11:59:58.000Z",
            "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        },
        separators=(",", ":"),
    ).encode()


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def batch_errors(*messages: Any, **envelope: Any) -> list[str]:
    good, errors = parse_batch(dumps({"batch": list(messages), **envelope}), NOW)
    assert len(good) + len({e.index for e in errors}) == len(messages)
    return [str(e) for e in errors]


def batch_one(message: dict[str, Any], **envelope: Any) -> Message:
    good, errors = parse_batch(dumps({"batch": [message], **envelope}), NOW)
    assert errors == []
    return good[0]


def body_error(body: bytes, single: str | None = None) -> str:
    with pytest.raises(MessageError) as info:
        if single:
            parse_single(body, single, NOW)
        else:
            parse_batch(body, NOW)
    return str(info.value)


def single_error(message: Any, type_: str = "track") -> str:
    return body_error(dumps(message), type_)


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u-1", "event": "Signed Up", **fields}


# --- valid messages ---------------------------------------------------------------------------


def test_python_client_batch_of_every_type():
    messages, errors = parse_batch(py_batch(*every_type()), NOW)
    assert errors == []
    assert [m.type for m in messages] == list(MESSAGE_TYPES)
    identify, track_, page, screen, group, alias = messages

    assert (identify.user_id, identify.anonymous_id, identify.event) == ("u-1", None, None)
    assert identify.traits == {"email": "ada@example.com", "plan": "pro"}
    assert identify.properties == {}
    assert track_.event == "Order Completed"
    assert track_.properties["products"] == [{"sku": "a-1"}]
    assert track_.traits == {}
    assert (page.event, page.user_id, page.anonymous_id) == ("Pricing", None, "anon-7")
    assert page.properties == {"path": "/pricing"}
    assert screen.event == "Home"
    assert (group.group_id, group.traits["name"]) == ("acme", "Acme Inc")
    assert (alias.user_id, alias.previous_id) == ("u-1", "anon-7")
    assert [m.message_id for m in messages] == [f"m-{t}" for t in MESSAGE_TYPES]
    assert all(m.context == {"library": LIBRARY} for m in messages)
    assert all(m.consent == {} for m in messages)


def test_python_client_timestamps_are_corrected_with_the_batch_sent_at():
    message = parse_batch(py_batch(every_type()[1]), NOW)[0][0]
    client = datetime(2024, 5, 1, 11, 59, 58, 123000, tzinfo=UTC)
    sent = datetime(2024, 5, 1, 11, 59, 59, 500000, tzinfo=UTC)
    assert message.original_timestamp == client
    assert message.sent_at == sent
    assert message.received_at == NOW
    assert message.timestamp == NOW - (sent - client)
    assert message.timestamp.tzinfo is UTC


def test_analytics_js_page_on_its_single_endpoint():
    message = parse_single(ajs_page_body(), "page", NOW)
    assert message.type == "page"
    assert message.event == "Pricing"
    assert message.anonymous_id == "0b8a6c55-4f1e-4ad1-9a7e-8c4d7f5b0e11"
    assert message.user_id is None
    assert message.message_id == "ajs-next-1714564797900-6b1c"
    assert message.properties["title"] == "Pricing"
    assert message.consent == {"Advertising": False, "Analytics": True}
    assert message.sent_at == datetime(2024, 5, 1, 11, 59, 58, tzinfo=UTC)
    assert message.timestamp == NOW - timedelta(milliseconds=100)
    assert message.raw["_metadata"] == {
        "bundled": ["Segment.io"],
        "unbundled": [],
        "bundledIds": [],
    }
    assert "writeKey" not in message.raw  # a credential is not stored with the event


@pytest.mark.parametrize(
    ("type_", "fields"),
    [
        ("identify", {"userId": "u-1"}),
        ("track", {"anonymousId": "a-1", "event": "Clicked"}),
        ("page", {"userId": "u-1"}),
        ("screen", {"anonymousId": "a-1"}),
        ("group", {"userId": "u-1", "groupId": "g-1"}),
        ("alias", {"userId": "u-1", "previousId": "a-1"}),
    ],
)
def test_minimal_single_message_of_each_type(type_, fields):
    message = parse_single(dumps(fields), type_, NOW)
    assert message.type == type_
    assert message.timestamp == NOW
    assert (message.original_timestamp, message.sent_at) == (None, None)
    assert (message.traits, message.properties, message.context) == ({}, {}, {})
    assert message.raw == {**fields, "messageId": message.message_id}


def test_page_and_screen_name_is_optional():
    assert parse_single(dumps({"userId": "u"}), "page", NOW).event is None
    assert parse_single(dumps({"userId": "u", "name": " "}), "screen", NOW).event is None
    assert single_error({"userId": "u", "name": 3}, "page") == "name: must be a string, not number"


def test_traits_of_non_identify_messages_come_from_context():
    message = batch_one(track(context={"traits": {"email": "a@b.c"}}, traits={"ignored": 1}))
    assert message.traits == {"email": "a@b.c"}
    identify = parse_single(
        dumps({"userId": "u", "traits": {"a": 1}, "context": {"traits": {"b": 2}}}), "identify", NOW
    )
    assert identify.traits == {"a": 1}


def test_unknown_fields_are_kept_in_raw():
    message = batch_one(
        track(
            channel="server",
            version=2,
            future={"nested": [1, {"x": None}]},
            properties={"custom": {"deep": True}},
        )
    )
    assert message.raw["channel"] == "server"
    assert message.raw["future"] == {"nested": [1, {"x": None}]}
    assert message.properties == {"custom": {"deep": True}}


# --- identities -----------------------------------------------------------------------------


def test_integer_ids_are_accepted_as_strings_and_raw_keeps_them():
    message = batch_one(
        {"type": "group", "userId": 42, "anonymousId": -7, "groupId": 9, "messageId": "m"}
    )
    assert (message.user_id, message.anonymous_id, message.group_id) == ("42", "-7", "9")
    assert message.raw["userId"] == 42


@pytest.mark.parametrize(
    ("value", "kind"),
    [(True, "boolean"), (1.5, "number"), ({"id": 1}, "object"), (["u"], "array")],
)
def test_ids_of_other_types_are_refused(value, kind):
    assert batch_errors(track(userId=value)) == [f"batch[0].userId: must be a string, not {kind}"]
    assert batch_errors(track(userId=None, anonymousId=value)) == [
        f"batch[0].anonymousId: must be a string, not {kind}"
    ]


@pytest.mark.parametrize("blank", [None, "", "   ", "\t\n"])
def test_blank_ids_count_as_missing(blank):
    assert single_error({"userId": blank, "anonymousId": "", "event": "E"}) == (
        "userId: either userId or anonymousId is required"
    )


def test_id_length_limit():
    assert batch_one(track(userId="u" * 512)).user_id == "u" * 512
    assert batch_errors(track(userId="u" * 513)) == [
        "batch[0].userId: must be at most 512 characters"
    ]


def test_group_needs_group_id():
    assert single_error({"userId": "u"}, "group") == "groupId: is required"
    assert single_error({"userId": "u", "groupId": " "}, "group") == "groupId: is required"
    assert single_error({"userId": "u", "groupId": False}, "group") == (
        "groupId: must be a string, not boolean"
    )


def test_alias_needs_user_id_and_previous_id():
    assert single_error({"anonymousId": "a", "previousId": "p"}, "alias") == "userId: is required"
    assert single_error({"userId": "u"}, "alias") == "previousId: is required"


# --- event names and types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (None, "event: is required"),
        ("", "event: is required"),
        ("  ", "event: is required"),
        (7, "event: must be a string, not number"),
        ("E" * 256, "event: must be at most 255 characters"),
    ],
)
def test_track_needs_an_event_name(event, error):
    assert single_error({"userId": "u", "event": event}) == error


def test_event_name_of_255_characters_is_accepted():
    assert batch_one(track(event="E" * 255)).event == "E" * 255


def test_batch_message_type_is_required_and_known():
    assert batch_errors({"userId": "u"}) == ["batch[0].type: is required"]
    assert batch_errors({"type": "purchase", "userId": "u"}) == [
        "batch[0].type: must be one of identify, track, page, screen, group, alias"
    ]
    assert batch_errors({"type": ["track"], "userId": "u"}) == [
        "batch[0].type: must be one of identify, track, page, screen, group, alias"
    ]


def test_single_endpoint_decides_the_type():
    assert parse_single(dumps({"type": "identify", "userId": "u"}), "identify", NOW).type == (
        "identify"
    )
    assert single_error({"type": "track", "userId": "u"}, "identify") == (
        'type: must be "identify" on this endpoint, or left out'
    )


def test_unknown_endpoint_type_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown message type 'batch'"):
        parse_single(b"{}", "batch", NOW)


@pytest.mark.parametrize("field", ["traits", "properties", "context", "integrations"])
@pytest.mark.parametrize(("value", "kind"), [([], "array"), ("x", "string"), (1, "number")])
def test_object_fields_must_be_objects(field, value, kind):
    assert batch_errors(track(**{field: value})) == [
        f"batch[0].{field}: must be an object, not {kind}"
    ]


def test_null_object_fields_are_absent():
    message = batch_one(track(traits=None, properties=None, context=None, integrations=None))
    assert (message.traits, message.properties, message.context) == ({}, {}, {})


def test_all_faults_of_a_message_are_reported_together():
    assert batch_errors(
        {"type": "track", "userId": True, "event": 3, "timestamp": "soon", "context": []}
    ) == [
        "batch[0].context: must be an object, not array",
        "batch[0].userId: must be a string, not boolean",
        "batch[0].event: must be a string, not number",
        "batch[0].timestamp: is not an ISO-8601 date-time",
    ]


# --- messageId ------------------------------------------------------------------------------


def test_message_id_is_kept():
    assert batch_one(track(messageId="abc")).message_id == "abc"
    assert batch_one(track(messageId="m" * 255)).message_id == "m" * 255


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (12, "messageId: must be a string, not number"),
        ({}, "messageId: must be a string, not object"),
        ("m" * 256, "messageId: must be at most 255 characters"),
    ],
)
def test_bad_message_ids(value, error):
    assert single_error({"userId": "u", "event": "E", "messageId": value}) == error


def test_missing_message_id_is_derived_deterministically_and_written_to_raw():
    message = track(properties={"b": 1, "a": [1, 2]}, timestamp="2024-05-01T11:00:00Z")
    first = batch_one(message)
    replay = batch_one(dict(reversed(list(message.items()))), sentAt="2024-05-01T11:59:00Z")
    assert re.fullmatch(r"sha256:[0-9a-f]{32}", first.message_id)
    assert replay.message_id == first.message_id  # key order and sentAt do not matter
    assert first.raw["messageId"] == first.message_id
    assert "messageId" not in message  # the caller's dict is not modified
    other = batch_one(track(properties={"b": 2, "a": [1, 2]}, timestamp="2024-05-01T11:00:00Z"))
    assert other.message_id != first.message_id


def test_derived_id_ignores_blank_message_id_and_retry_sent_at():
    base = {"userId": "u", "event": "E", "timestamp": "2024-05-01T11:00:00Z"}
    ids = {
        parse_single(dumps(body), "track", received_at).message_id
        for body in (
            base,
            {**base, "messageId": ""},
            {**base, "messageId": None},
            {**base, "type": "track"},
            {**base, "sentAt": "2024-05-01T11:00:05Z"},
            {**base, "writeKey": "rotated"},
        )
        for received_at in (NOW, NOW + timedelta(minutes=5))
    }
    assert ids == {derive_message_id(base, "track", NOW)}
    assert derive_message_id(base, "page", NOW) != derive_message_id(base, "track", NOW)


def test_derived_id_of_a_message_without_client_time_includes_received_at():
    # Nothing tells a replay from a second heartbeat: both are kept, each dated when received.
    heartbeat = dumps({"userId": "server-7", "event": "Heartbeat"})
    first = parse_single(heartbeat, "track", NOW)
    again = parse_single(heartbeat, "track", NOW + timedelta(minutes=1))
    assert first.message_id != again.message_id
    assert parse_single(heartbeat, "track", NOW).message_id == first.message_id
    original = {"userId": "u", "event": "E", "originalTimestamp": "2024-05-01T11:00:00Z"}
    assert derive_message_id(original, "track", NOW) == derive_message_id(
        original, "track", NOW + timedelta(minutes=1)
    )


def test_write_key_in_a_message_is_not_kept():
    message = batch_one(track(writeKey="wk_secret", messageId="m-1"), writeKey="wk_secret")
    assert message.raw == {**track(), "messageId": "m-1"}
    single = parse_single(dumps(track(writeKey="wk_secret")), "track", NOW)
    assert "writeKey" not in single.raw


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_client_timestamp_without_sent_at_is_used_as_is(text, expected):
    message = batch_one(track(timestamp=text))
    assert message.timestamp == expected
    assert message.original_timestamp == expected
    assert message.timestamp.utcoffset() == timedelta(0)


def test_original_timestamp_is_the_client_clock_when_timestamp_is_absent():
    message = batch_one(
        track(originalTimestamp="2024-05-01T13:00:00Z", sentAt="2024-05-01T13:00:10Z")
    )
    assert message.original_timestamp == datetime(2024, 5, 1, 13, tzinfo=UTC)
    assert message.timestamp == NOW - timedelta(seconds=10)


def test_clock_skew_correction_prefers_the_message_sent_at():
    # The client's clock is 3 hours fast; the event happened 30 s before it was sent.
    message = {**track(), "timestamp": "2024-05-01T14:59:30Z", "sentAt": "2024-05-01T15:00:00Z"}
    corrected = NOW - timedelta(seconds=30)
    assert batch_one(message).timestamp == corrected
    assert batch_one(message, sentAt="2024-05-01T09:00:00Z").timestamp == corrected
    assert batch_one(message).sent_at == datetime(2024, 5, 1, 15, tzinfo=UTC)


def test_batch_sent_at_corrects_messages_without_their_own():
    message = batch_one(track(timestamp="2024-05-01T14:59:30Z"), sentAt="2024-05-01T15:00:00Z")
    assert message.timestamp == NOW - timedelta(seconds=30)
    assert message.sent_at == datetime(2024, 5, 1, 15, tzinfo=UTC)


def test_no_client_timestamp_means_received_at():
    message = batch_one(track(sentAt="2024-05-01T15:00:00Z"))
    assert (message.timestamp, message.original_timestamp) == (NOW, None)


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt"])
@pytest.mark.parametrize(
    "value", ["yesterday", "2024-13-01T00:00:00Z", "2024-05-01T24:00:00Z", "1714560000", ""]
)
def test_bad_timestamp_formats_name_the_field(field, value):
    assert batch_errors(track(**{field: value})) == [
        f"batch[0].{field}: is not an ISO-8601 date-time"
    ]


@pytest.mark.parametrize(("value", "kind"), [(1714560000, "number"), ({}, "object")])
def test_timestamps_must_be_strings(value, kind):
    assert single_error({"userId": "u", "event": "E", "timestamp": value}) == (
        f"timestamp: must be an ISO-8601 date-time string, not {kind}"
    )


def test_far_future_timestamp_is_refused():
    just_inside = (NOW + timedelta(minutes=59)).isoformat()
    assert batch_one(track(timestamp=just_inside)).timestamp == NOW + timedelta(minutes=59)
    assert batch_errors(track(timestamp="2024-05-01T13:00:01Z")) == [
        "batch[0].timestamp: is more than 1 hour after the time it was received (far-future)"
    ]
    # Also when only originalTimestamp is given, and after correction.
    assert batch_errors(track(originalTimestamp="2030-01-01T00:00:00Z")) == [
        "batch[0].timestamp: is more than 1 hour after the time it was received (far-future)"
    ]
    assert batch_errors(track(timestamp="2024-05-01T14:00:00Z", sentAt="2024-05-01T12:00:00Z")) == [
        "batch[0].timestamp: is more than 1 hour after the time it was received (far-future)"
    ]


def test_timestamp_before_2000_is_refused():
    assert batch_one(track(timestamp="2000-01-01T00:00:00Z")).timestamp.year == 2000
    assert batch_errors(track(timestamp="1999-12-31T23:59:59Z")) == [
        "batch[0].timestamp: is before 2000-01-01"
    ]


def test_correction_out_of_datetime_range_is_an_error_not_a_crash():
    assert batch_errors(track(timestamp="9999-12-31T23:00:00Z", sentAt="0001-01-01T00:00:00Z")) == [
        "batch[0].timestamp: is out of range after correcting for clock skew with sentAt"
    ]
    assert batch_errors(track(timestamp="0001-01-01T00:00:00+01:00")) == [
        "batch[0].timestamp: is not an ISO-8601 date-time"
    ]


def test_bad_batch_sent_at_is_an_envelope_error():
    assert body_error(dumps({"batch": [track()], "sentAt": "noon"})) == (
        "sentAt: is not an ISO-8601 date-time"
    )


def test_received_at_must_be_aware_and_is_converted_to_utc():
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_batch(dumps({"batch": [track()]}), datetime(2024, 5, 1, 12))
    paris = NOW.astimezone(timezone(timedelta(hours=2)))
    message = parse_single(dumps(track()), "track", paris)
    assert message.received_at == NOW
    assert message.received_at.tzinfo is UTC


# --- batch context and consent ------------------------------------------------------------------


def test_batch_context_is_merged_under_each_message_context():
    context = {"ip": "203.0.113.7", "library": {"name": "batcher"}, "locale": "en"}
    good, errors = parse_batch(
        dumps(
            {
                "batch": [track(context={"library": {"name": "own"}}), track()],
                "context": context,
                "writeKey": "ignored-here",
            }
        ),
        NOW,
    )
    assert errors == []
    assert good[0].context == {"ip": "203.0.113.7", "library": {"name": "own"}, "locale": "en"}
    assert good[1].context == context
    assert good[0].raw["context"] == {"library": {"name": "own"}}  # raw is the message only
    assert "ip" not in good[1].raw.get("context", {})


def test_batch_context_consent_applies_to_messages():
    context = {"consent": {"categoryPreferences": {"ads": True}}}
    assert batch_one(track(), context=context).consent == {"ads": True}
    overridden = track(context={"consent": {"categoryPreferences": {"ads": False}}})
    assert batch_one(overridden, context=context).consent == {"ads": False}


def test_batch_context_must_be_an_object():
    assert body_error(dumps({"batch": [track()], "context": "x"})) == (
        "context: must be an object, not string"
    )


def test_consent_preferences():
    prefs = {"Advertising": True, "Analytics": False}
    message = batch_one(track(context={"consent": {"categoryPreferences": prefs}}))
    assert message.consent == prefs
    assert batch_one(track(context={"consent": {}})).consent == {}


@pytest.mark.parametrize(
    ("consent", "errors"),
    [
        (
            {"categoryPreferences": {"ads": "yes", "email": True, "sms": 1}},
            [
                "context.consent.categoryPreferences.ads: must be a boolean, not string",
                "context.consent.categoryPreferences.sms: must be a boolean, not number",
            ],
        ),
        (
            {"categoryPreferences": ["ads"]},
            ["context.consent.categoryPreferences: must be an object, not array"],
        ),
        ("granted", ["context.consent: must be an object, not string"]),
    ],
)
def test_bad_consent_names_the_category(consent, errors):
    assert single_error(track(context={"consent": consent})) == "; ".join(errors)


def test_context_traits_must_be_an_object():
    assert batch_errors(track(context={"traits": "vip"})) == [
        "batch[0].context.traits: must be an object, not string"
    ]


# --- sizes ----------------------------------------------------------------------------------


def test_single_body_over_32_kb_is_refused():
    body = dumps(track(properties={"blob": "x" * MAX_MESSAGE_BYTES}))
    assert body_error(body, "track") == f"(body): is {len(body)} bytes; the limit is 32768 bytes"


def test_batch_body_over_500_kb_is_refused():
    body = dumps({"batch": [track(properties={"blob": "x" * 20_000})] * 26})
    assert len(body) > MAX_BATCH_BYTES
    assert body_error(body) == f"(body): is {len(body)} bytes; the limit is 512000 bytes"


def compact_size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


def test_message_over_32_kb_in_a_batch_fails_alone():
    big = track(properties={"blob": "é" * 17_000})
    good, errors = parse_batch(dumps({"batch": [track(), big, track()]}), NOW)
    assert len(good) == 2
    assert [str(e) for e in errors] == [
        f"batch[1]: is {compact_size(big)} bytes as JSON; the limit is 32768 bytes"
    ]


def test_message_size_is_measured_re_serialised():
    # Source text is small, but each 1e15 re-serialises as 1000000000000000.0.
    floats = track(properties={"values": [1e15] * 2000})
    source = json.dumps({"batch": [floats]}, separators=(",", ":"))
    source = source.replace("1000000000000000.0", "1e15").encode()
    assert len(source) < 11_000
    assert [str(e) for e in parse_batch(source, NOW)[1]] == [
        f"batch[0]: is {compact_size(floats)} bytes as JSON; the limit is 32768 bytes"
    ]
    # And whitespace in the source does not count against a message.
    wide = {f"key{i}": "v" for i in range(1000)}
    spaced = json.dumps({"batch": [track(properties=wide)]}, indent=60)
    assert len(spaced) > MAX_MESSAGE_BYTES * 2
    assert parse_batch(spaced.encode(), NOW)[1] == []


# --- malformed and hostile bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "(body): not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"{", "(body): not valid JSON: Expecting property name enclosed in double quotes: "),
        (b'{"batch": [1,]}', "(body): not valid JSON: Expecting value: line 1 column 14"),
        (b'{"batch": []} []', "(body): not valid JSON: Extra data: line 1 column 15"),
        (b"\xff\xfe{}", "(body): is not valid UTF-8"),
        (b'{"batch": [{"x": NaN}]}', "(body): not valid JSON: NaN is not a JSON number"),
        (b'{"batch": [{"x": -Infinity}]}', "(body): not valid JSON: -Infinity is not a JSON"),
        (b'{"batch": [{"x": 1e400}]}', "(body): not valid JSON: number 1e400 is out of range"),
        (b"[]", "(body): must be a JSON object, not array"),
        (b'"batch"', "(body): must be a JSON object, not string"),
        (b"null", "(body): must be a JSON object, not null"),
        (b"{}", "batch: is required"),
        (b'{"batch": null}', "batch: is required"),
        (b'{"batch": {"0": {}}}', "batch: must be an array, not object"),
        (b'{"batch": []}', "batch: must not be empty"),
        (b'{"batch": [1], "batch": "x"}', "batch: must be an array, not string"),
    ],
)
def test_bad_batch_bodies(body, error):
    assert body_error(body).startswith(error)


@pytest.mark.parametrize("type_", MESSAGE_TYPES)
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[]", "(body): must be a JSON object, not array"),
        (b"42", "(body): must be a JSON object, not number"),
        (b"{'userId': 1}", "(body): not valid JSON: Expecting property name"),
        (b'{"userId": Infinity}', "(body): not valid JSON: Infinity is not a JSON number"),
    ],
)
def test_bad_single_bodies(type_, body, error):
    assert body_error(body, type_).startswith(error)


def test_too_many_digits_is_a_clean_error():
    body = b'{"batch": [{"x": ' + b"9" * 5000 + b"}]}"
    assert body_error(body) == "(body): not valid JSON: a number has more than 4300 digits"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"batch": ' + b"[" * 100_000,
        b'{"batch": [' + b'{"a":' * 30_000 + b"1" + b"}" * 30_000 + b"]}",
        b'{"batch": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}",
    ],
)
def test_absurd_nesting_is_a_clean_error(body):
    assert body_error(body) == f"(body): nests deeper than {MAX_DEPTH} levels"
    assert body_error(body[:MAX_MESSAGE_BYTES], "track") == (
        f"(body): nests deeper than {MAX_DEPTH} levels"
    )


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def test_depth_limit_counts_the_message_itself():
    at_limit = track(properties=nested(MAX_DEPTH - 1))  # the message, then 31 objects
    over = track(properties=nested(MAX_DEPTH))
    good, errors = parse_batch(dumps({"batch": [at_limit, over, track(x=nested(200))]}), NOW)
    assert len(good) == 1
    assert [str(e) for e in errors] == [
        "batch[1].properties: nests deeper than 32 levels",
        "batch[2].x: nests deeper than 32 levels",
    ]
    assert single_error(over) == "properties: nests deeper than 32 levels"
    assert parse_single(dumps(at_limit), "track", NOW).properties == at_limit["properties"]


def test_deep_batch_context_is_refused():
    assert body_error(dumps({"batch": [track()], "context": nested(MAX_DEPTH)})) == (
        "context.a: nests deeper than 32 levels"
    )


def test_unpaired_surrogates_and_nul_are_refused_by_field():
    body = (
        b'{"batch": ['
        b'{"type": "track", "userId": "u", "event": "E", "properties": {"a": "\\ud800x"}},'
        b'{"type": "track", "userId": "u", "event": "E", "properties": {"b": ["ok", "\\u0000"]}},'
        b'{"type": "track", "userId": "u", "event": "E", "properties": {"\\udfff": 1}},'
        b'{"type": "track", "userId": "u", "event": "\\ud83d\\ude00 \\\\u0000 \\u00e9"}'
        b"]}"
    )
    good, errors = parse_batch(body, NOW)
    assert [str(e) for e in errors] == [
        "batch[0].properties.a: contains an unpaired surrogate",
        "batch[1].properties.b[1]: contains a NUL character",
        "batch[2].properties.\\udfff: contains an unpaired surrogate",
    ]
    # An escaped pair is one character; an escaped backslash is no NUL.
    assert [m.event for m in good] == ["\U0001f600 \\u0000 é"]
    assert all(str(e).encode() for e in errors)  # safe to put in a UTF-8 response


def test_good_and_bad_messages_in_one_batch():
    good, errors = parse_batch(
        py_batch(
            every_type()[0],
            "not a message",
            py_message("track", "m-2", userId="u-2"),
            every_type()[1],
            None,
            py_message("alias", "m-5", userId="u-1"),
        ),
        NOW,
    )
    assert [m.message_id for m in good] == ["m-identify", "m-track"]
    assert [str(e) for e in errors] == [
        "batch[1]: must be an object, not string",
        "batch[2].event: is required",
        "batch[4]: must be an object, not null",
        "batch[5].previousId: is required",
    ]
    assert [(e.index, e.field) for e in errors] == [
        (1, "(message)"),
        (2, "event"),
        (4, "(message)"),
        (5, "previousId"),
    ]


def test_layout_of_the_body_does_not_matter():
    body = {"writeKey": "k", "batch": every_type(), "sentAt": SENT_AT, "metadata": {"n": 1}}
    compact = parse_batch(json.dumps(body, separators=(",", ":")).encode(), NOW)[0]
    pretty = parse_batch(("\n " + json.dumps(body, indent="\t") + "\r\n").encode(), NOW)[0]
    escaped = json.dumps(body).replace('"batch"', '"\\u0062atch"').encode()
    assert compact == pretty == parse_batch(escaped, NOW)[0]
    assert len(compact) == 6


def test_fast_path_agrees_with_the_exact_path():
    # parse_batch vets each message on its source text; parse_message re-serialises every one.
    rng = random.Random(7)
    messages = [realistic(rng, i) for i in range(100)]
    good, errors = parse_batch(py_batch(*messages), NOW)
    assert errors == []
    sent_at = datetime.fromisoformat(SENT_AT)
    assert good == [parse_message(m, None, NOW, i, sent_at) for i, m in enumerate(messages)]


def realistic(rng: random.Random, i: int) -> dict[str, Any]:
    type_ = rng.choice(MESSAGE_TYPES)
    fields: dict[str, Any] = {"userId": f"user-{i}", "anonymousId": f"anon-{rng.random()}"}
    fields |= {
        "identify": {"traits": {"email": f"u{i}@example.com", "name": "Zoë", "age": 30}},
        "track": {"event": "Product Viewed", "properties": {"price": 9.99, "tags": ["a", "b"]}},
        "page": {"name": "Home", "properties": {"url": "https://example.com/?q=1"}},
        "screen": {"name": "Cart", "properties": {"items": 3}},
        "group": {"groupId": f"g-{i % 7}", "traits": {"plan": "team"}},
        "alias": {"previousId": f"anon-{i}"},
    }[type_]
    return py_message(type_, f"m-{i}", **fields)


# --- nothing but MessageError, whatever comes in -------------------------------------------


JUNK_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    "",
    " ",
    "x" * 600,
    "2024-05-01T12:00:00Z",
    [],
    [None, {}],
    {},
    {"a": {"b": []}},
    "\u0000",
    "\U0001f600",
]
FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "event",
    "name",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "traits",
    "properties",
    "context",
    "integrations",
    "groupId",
    "previousId",
]


def assert_clean(errors: list[FieldError]) -> None:
    for error in errors:
        assert error.field and error.message
        str(error).encode("utf-8")  # never an unencodable character in a response


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_types_everywhere(field):
    for type_ in MESSAGE_TYPES:
        for value in JUNK_VALUES:
            message = {**every_type()[MESSAGE_TYPES.index(type_)], field: value}
            good, errors = parse_batch(py_batch(message), NOW)
            assert_clean(errors)
            assert len(good) + len({e.index for e in errors}) == 1
            try:
                parse_single(dumps(message), type_, NOW)
            except MessageError as exc:
                assert_clean(exc.errors)


def test_context_junk_never_escapes_as_another_exception():
    for key in ("consent", "traits", "library"):
        for value in JUNK_VALUES:
            for pref in JUNK_VALUES[:10]:
                context = {key: value, "consent": {"categoryPreferences": {"c": pref}}}
                good, errors = parse_batch(py_batch(track(context=context)), NOW)
                assert_clean(errors)
                assert len(good) + len(errors) >= 1


def test_random_bytes_and_mangled_json_give_message_errors():
    rng = random.Random(2024)
    valid = py_batch(*every_type())
    for _ in range(400):
        if rng.random() < 0.3:
            body = rng.randbytes(rng.randrange(0, 200))
        else:
            body = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                position = rng.randrange(len(body))
                body[position : position + 1] = bytes([rng.randrange(256)]) * rng.randrange(3)
            body = bytes(body)
        for parse in (lambda b: parse_batch(b, NOW), lambda b: parse_single(b, "track", NOW)):
            try:
                result = parse(body)
            except MessageError as exc:
                assert_clean(exc.errors)
            else:
                if isinstance(result, tuple):
                    assert_clean(result[1])


# --- the error types ------------------------------------------------------------------------


def test_field_error_text():
    assert str(FieldError(3, "userId", "must be a string")) == "batch[3].userId: must be a string"
    assert str(FieldError(None, "userId", "is required")) == "userId: is required"
    assert str(FieldError(None, "(body)", "not valid JSON")) == "(body): not valid JSON"
    assert str(FieldError(0, "(message)", "must be an object")) == "batch[0]: must be an object"


def test_message_error_is_a_user_error_joining_its_errors():
    errors = [FieldError(1, "a", "x"), FieldError(1, "b", "y")]
    error = MessageError(errors)
    assert isinstance(error, UserError)
    assert error.errors == errors
    assert str(error) == "batch[1].a: x; batch[1].b: y"


def test_parse_message_directly():
    message = parse_message(
        {"type": "track", "userId": "u", "event": "E"},
        None,
        NOW,
        4,
        batch_sent_at=NOW,
        batch_context={"ip": "198.51.100.1"},
    )
    assert message.context == {"ip": "198.51.100.1"}
    with pytest.raises(MessageError) as info:
        parse_message(["track"], None, NOW, 2)
    assert str(info.value) == "batch[2]: must be an object, not array"
    with pytest.raises(MessageError) as info:
        parse_message({"userId": "u", "x": float("nan")}, "identify", NOW, None)
    assert str(info.value) == "x: is a number out of range"
