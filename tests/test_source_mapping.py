from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cdp.collect.messages import parse_message
from cdp.sources.mapping import MappingError, derived_anonymous_id, record_message
from cdp.sources.spec import MappingSpec, SourceSpec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec(kind: str = "profiles", **mapping) -> SourceSpec:
    return SourceSpec(name="crm", type="csv", kind=kind, mapping=MappingSpec(**mapping))


PROFILES = spec(
    identifiers={"user_id": "Id", "email": "Email", "phone": "Phone", "loyalty_id": "Card"},
    traits={"first_name": "First", "plan": "Plan"},
    consents={"newsletter": "News", "ads": "Ads"},
    timestamp="Updated",
)


def test_profile_record_becomes_an_identify_with_identifiers_as_traits():
    record = {
        "Id": " 42 ", "Email": "Ada@Example.com", "Phone": "+49 30 1234567", "Card": "LOY-1",
        "First": "Ada", "Plan": "", "News": "Yes", "Ads": "0", "Updated": "2026-02-01 10:00:00",
    }  # fmt: skip
    assert record_message(PROFILES, record, "f1:2") == {
        "messageId": "crm:f1:2",
        "userId": "42",
        "timestamp": "2026-02-01 10:00:00",
        "type": "identify",
        "traits": {
            "first_name": "Ada",
            "email": "Ada@Example.com",
            "phone": "+49 30 1234567",
            "loyalty_id": "LOY-1",
        },
        "context": {"consent": {"categoryPreferences": {"newsletter": True, "ads": False}}},
    }


def test_the_result_is_a_valid_message():
    record = {"Id": "42", "Email": "a@example.com", "News": "true", "Updated": "2026-02-01"}
    message = parse_message(record_message(PROFILES, record, "k"), None, NOW, None)
    assert message.type == "identify"
    assert message.user_id == "42"
    assert message.timestamp == datetime(2026, 2, 1, tzinfo=UTC)
    assert message.consent == {"newsletter": True}


def test_without_user_id_an_anonymous_id_is_derived_per_person():
    record = {"Email": "ada@example.com"}
    first = record_message(PROFILES, record, "f1:2")
    again = record_message(PROFILES, record, "f2:9")
    assert first["anonymousId"] == again["anonymousId"]
    assert first["anonymousId"] == derived_anonymous_id("crm", "email", "ada@example.com")
    assert first["anonymousId"] != derived_anonymous_id("crm", "email", "bob@example.com")
    assert "userId" not in first and first["traits"] == {"email": "ada@example.com"}


def test_event_record_becomes_a_track():
    events = spec(
        "events",
        identifiers={"anonymous_id": "visitor", "email": "mail"},
        event_field="what",
        timestamp="at",
        properties={"revenue": "amount", "sku": "item.sku"},
        message_id="order",
    )
    record = {
        "visitor": "v1", "mail": "a@example.com", "what": "Order Completed", "at": 1767225600,
        "amount": 12.5, "item": {"sku": "S-1"}, "order": "o-7",
    }  # fmt: skip
    assert record_message(events, record, "ignored") == {
        "messageId": "crm:o-7",
        "anonymousId": "v1",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "type": "track",
        "event": "Order Completed",
        "properties": {"revenue": 12.5, "sku": "S-1"},
        "context": {"traits": {"email": "a@example.com"}},
    }
    fixed = spec("events", identifiers={"user_id": "u"}, event="Signed Up")
    assert record_message(fixed, {"u": "7"}, "k")["event"] == "Signed Up"


@pytest.mark.parametrize(
    ("mapping", "record", "reason"),
    [
        (
            {"identifiers": {"email": "E", "user_id": "I"}},
            {"E": " ", "I": ""},
            "mapping.identifiers: every identifier field is empty ('E', 'I')",
        ),
        (
            {"identifiers": {"email": "E"}, "consents": {"news": "N"}},
            {"E": "a@example.com", "N": "maybe"},
            "mapping.consents.news: 'maybe' in field 'N' is neither granted",
        ),
        (
            {"identifiers": {"email": "E"}},
            {"E": ["a@example.com"]},
            "mapping.identifiers.email: field 'E' holds list, not text",
        ),
        (
            {"identifiers": {"email": "E"}, "message_id": "M"},
            {"E": "a@example.com", "M": ""},
            "mapping.message_id: field 'M' is empty",
        ),
    ],
)
def test_records_the_mapping_cannot_use_raise_naming_the_key(mapping, record, reason):
    with pytest.raises(MappingError) as info:
        record_message(spec(**mapping), record, "k")
    assert str(info.value).startswith(reason)


def test_events_need_a_timestamp_and_a_name_when_mapped():
    events = spec("events", identifiers={"user_id": "u"}, event_field="e", timestamp="t")
    with pytest.raises(MappingError, match=r"mapping\.timestamp: field 't' is empty"):
        record_message(events, {"u": "1", "e": "X", "t": ""}, "k")
    with pytest.raises(MappingError, match=r"mapping\.event_field: field 'e' is empty"):
        record_message(events, {"u": "1", "e": "", "t": "2026-01-01"}, "k")


def test_a_long_key_gives_a_hashed_message_id_of_bounded_length():
    message_id = record_message(PROFILES, {"Id": "1"}, "x" * 300)["messageId"]
    assert message_id.startswith("crm:sha256:") and len(message_id) == 75
    assert message_id == record_message(PROFILES, {"Id": "2"}, "x" * 300)["messageId"]
