"""Identity rules: normalisation, blocked values, config validation, extraction and limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cdp.errors import UserError
from cdp.identity.rules import (
    BUILTIN_TYPES,
    DEFAULT_BLOCKED,
    IdentifierType,
    IdentityConfig,
    InvalidIdentifier,
    Rules,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

LOYALTY = {
    "priority": 3,
    "limit": 1,
    "normalise": "regex",
    "pattern": r"(?:LOY-)?(\d{6,10})",
    "sources": ["traits.loyalty_id", "properties.loyalty_id", "context.traits.loyalty_id"],
}


def rules(**config: Any) -> Rules:
    return Rules(IdentityConfig.model_validate(config))


def reason(rules_: Rules, type_name: str, value: object) -> str:
    with pytest.raises(InvalidIdentifier) as caught:
        rules_.normalise(type_name, value)
    return caught.value.reason


# --- normalisation ---------------------------------------------------------------------------


def test_email_is_trimmed_and_lower_cased() -> None:
    assert Rules().normalise("email", "  Jane.Doe@Example.COM \t") == "jane.doe@example.com"


def test_email_keeps_unicode_lower_cased() -> None:
    assert Rules().normalise("email", "Ödön@Exämple.com") == "ödön@exämple.com"


@pytest.mark.parametrize("value", ["jane@", "jane.example.com", "jane@@example.com", "a b@c.com"])
def test_invalid_email_is_refused(value: str) -> None:
    assert reason(Rules(), "email", value).startswith("not a valid e-mail address: ")


def test_special_use_email_domain_is_refused() -> None:
    assert reason(Rules(), "email", "jane@host.test").startswith("not a valid e-mail address: ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("+44-20-7946-0958", "+442079460958"),
        (" +1 (415) 555-2671 ", "+14155552671"),
        ("+49 30 901820", "+4930901820"),
    ],
)
def test_phone_with_country_code_becomes_e164(raw: str, expected: str) -> None:
    assert Rules().normalise("phone", raw) == expected


def test_national_phone_uses_default_region() -> None:
    assert rules(default_region="GB").normalise("phone", "020 7946 0958") == "+442079460958"
    assert rules(default_region="us").normalise("phone", "(415) 555-2671") == "+14155552671"


def test_national_phone_without_default_region_is_refused() -> None:
    assert reason(Rules(), "phone", "020 7946 0958") == (
        "phone number has no +country code and identity.default_region is not set"
    )


def test_country_code_wins_over_default_region() -> None:
    assert rules(default_region="GB").normalise("phone", "+1 415 555 2671") == "+14155552671"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 7700 900123", "not a valid phone number"),  # right length, unassigned range
        ("+1 123 456 7890", "not a valid phone number"),  # area codes never start with 1
        ("call me", "not a phone number"),
        ("+999 1234 5678", "phone number has an unknown country code"),
    ],
)
def test_invalid_phone_is_refused(raw: str, expected: str) -> None:
    assert reason(rules(default_region="GB"), "phone", raw) == expected


def test_none_normalisation_only_trims() -> None:
    assert Rules().normalise("user_id", "  AbC-123 ") == "AbC-123"


def test_lower_normalisation_casefolds() -> None:
    custom = rules(types={"crm_id": {"priority": 3, "normalise": "lower"}})
    assert custom.normalise("crm_id", " Straße-ABC ") == "strasse-abc"


def test_regex_normalisation_takes_the_first_group() -> None:
    custom = rules(types={"loyalty_id": LOYALTY})
    assert custom.normalise("loyalty_id", " LOY-0012345 ") == "0012345"
    assert custom.normalise("loyalty_id", 1234567) == "1234567"


def test_regex_without_group_keeps_the_whole_match() -> None:
    custom = rules(types={"sku": {"priority": 6, "normalise": "regex", "pattern": r"[A-Z]{3}\d+"}})
    assert custom.normalise("sku", " ABC123 ") == "ABC123"


def test_regex_must_match_fully() -> None:
    custom = rules(types={"loyalty_id": LOYALTY})
    assert reason(custom, "loyalty_id", "LOY-12345678X") == (
        r"does not match pattern '(?:LOY-)?(\\d{6,10})'"
    )


def test_integers_are_coerced() -> None:
    assert Rules().normalise("user_id", 123456) == "123456"


def test_bool_is_not_an_integer() -> None:
    assert Rules().normalise("user_id", 1) == "1"  # cached: True must not hit this entry
    assert reason(Rules(), "user_id", True) == "must be a string or an integer, not bool"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12.5, "must be a string or an integer, not float"),
        ({"id": 1}, "an object, not a single value"),
        (["a"], "a list, not a single value"),
        (None, "must be a string or an integer, not NoneType"),
    ],
)
def test_other_kinds_are_refused(value: object, expected: str) -> None:
    assert reason(Rules(), "user_id", value) == expected


def test_length_limits() -> None:
    assert Rules().normalise("user_id", "x" * 512) == "x" * 512
    assert reason(Rules(), "user_id", "x" * 513) == "longer than 512 characters"
    assert reason(Rules(), "user_id", "x" * 5000) == "longer than 4096 characters"


def test_long_raw_value_may_normalise_to_a_short_one() -> None:
    custom = rules(types={"ref": {"priority": 6, "normalise": "regex", "pattern": r"x*-(\d+)"}})
    assert custom.normalise("ref", "x" * 600 + "-42") == "42"


def test_unknown_type_is_refused() -> None:
    assert reason(Rules(), "shoe_size", "42") == "unknown identifier type 'shoe_size'"


def test_invalid_identifier_is_a_user_error() -> None:
    assert issubclass(InvalidIdentifier, UserError)
    assert str(InvalidIdentifier("blocked value")) == "blocked value"


def test_repeated_invalid_value_fails_every_time() -> None:
    shared_rules = Rules()
    assert reason(shared_rules, "email", "jane@") == reason(shared_rules, "email", "jane@")


# --- blocked values --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [v for v in DEFAULT_BLOCKED if v])
def test_default_blocked_values(value: str) -> None:
    shared_rules = Rules()
    assert reason(shared_rules, "user_id", value) == "blocked value"
    assert reason(shared_rules, "user_id", f"  {value.upper()} ") == "blocked value"
    assert reason(shared_rules, "device_id", value.title()) == "blocked value"


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_empty_values(value: str) -> None:
    assert reason(Rules(), "user_id", value) == "empty value"


def test_blocked_integers() -> None:
    assert reason(Rules(), "user_id", 0) == "blocked value"
    assert reason(Rules(), "user_id", -1) == "blocked value"


def test_blocked_email_is_compared_after_normalisation() -> None:
    assert reason(Rules(), "email", " Test@Example.COM ") == "blocked value"
    assert reason(Rules(), "email", "TEST@TEST.COM") == "blocked value"


def test_nil_uuid_is_blocked_in_any_case() -> None:
    nil = "00000000-0000-0000-0000-000000000000"
    assert reason(Rules(), "anonymous_id", nil) == "blocked value"
    assert reason(Rules(), "device_id", f" {nil} ") == "blocked value"


def test_per_type_blocked_exact_after_normalisation() -> None:
    custom = rules(
        default_region="US",
        types={"phone": {"priority": 3, "limit": 5, "normalise": "phone",
                         "blocked": ["+14155552671"]}},
    )  # fmt: skip
    assert reason(custom, "phone", "(415) 555-2671") == "blocked value"
    assert custom.normalise("phone", "(202) 555-0143") == "+12025550143"
    assert custom.normalise("email", "a@shop.com") == "a@shop.com"  # other types unaffected


def test_per_type_blocked_patterns_fully_match_ignoring_case() -> None:
    custom = rules(
        types={"user_id": {"priority": 1, "limit": 1, "blocked_patterns": [r"test-\d+"]}}
    )
    assert reason(custom, "user_id", "TEST-123") == r"blocked by pattern 'test-\\d+'"
    assert custom.normalise("user_id", "contest-123") == "contest-123"
    assert custom.normalise("user_id", "test-123x") == "test-123x"


def test_per_type_blocked_pattern_sees_the_normalised_value() -> None:
    custom = rules(
        types={"email": {"priority": 2, "normalise": "email", "blocked_patterns": [r".*@spam\.io"]}}
    )
    assert reason(custom, "email", " Jo@SPAM.io ") == r"blocked by pattern '.*@spam\\.io'"


def test_global_blocked_list_replaces_the_defaults() -> None:
    custom = rules(blocked=["Guest"])
    assert custom.normalise("user_id", "null") == "null"
    assert reason(custom, "user_id", " GUEST ") == "blocked value"
    assert reason(custom, "email", "guest") == "blocked value"
    assert reason(custom, "user_id", "") == "empty value"


# --- config ----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = IdentityConfig()
    assert config.default_region is None
    assert config.blocked == list(DEFAULT_BLOCKED)
    resolved = config.resolved_types()
    assert {name: (t.priority, t.limit, t.window_days, t.normalise, t.shared)
            for name, t in resolved.items()} == {
        "user_id": (1, 1, None, "none", False),
        "email": (2, 5, None, "email", False),
        "phone": (3, 5, None, "phone", False),
        "device_id": (4, 10, None, "none", False),
        "advertising_id": (4, 10, None, "none", False),
        "anonymous_id": (5, 50, 30, "none", False),
        "group_id": (10, None, None, "none", True),
    }  # fmt: skip


def test_user_types_merge_over_builtins() -> None:
    config = IdentityConfig.model_validate(
        {"types": {"email": {"priority": 7, "limit": 2}, "loyalty_id": LOYALTY}}
    )
    resolved = config.resolved_types()
    assert resolved["email"] == IdentifierType(priority=7, limit=2)
    assert resolved["loyalty_id"].sources == LOYALTY["sources"]
    assert resolved["phone"] is BUILTIN_TYPES["phone"]
    assert len(resolved) == len(BUILTIN_TYPES) + 1


def test_default_region_is_upper_cased() -> None:
    assert IdentityConfig(default_region=" gb ").default_region == "GB"


def validation_error(config: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        IdentityConfig.model_validate(config)
    return str(caught.value)


def test_unknown_key_is_named() -> None:
    message = validation_error({"types": {"loyalty_id": {**LOYALTY, "prority": 2}}})
    assert "types.loyalty_id.prority\n  Extra inputs are not permitted" in message
    assert "default_regoin" in validation_error({"default_regoin": "GB"})


def test_bad_pattern_is_named() -> None:
    message = validation_error({"types": {"loyalty_id": {**LOYALTY, "pattern": "(LOY"}}})
    assert "types.loyalty_id.pattern\n  Value error, not a valid regular expression" in message


def test_bad_blocked_pattern_is_named() -> None:
    message = validation_error({"types": {"user_id": {"priority": 1, "blocked_patterns": ["[a-"]}}})
    assert "types.user_id.blocked_patterns.0\n  Value error, not a valid regular expression" in (
        message
    )


def test_unknown_region_is_named() -> None:
    message = validation_error({"default_region": "XX"})
    assert "default_region\n  Value error, default_region 'XX' is not a region code" in message


def test_bad_normalise_is_named() -> None:
    message = validation_error({"types": {"crm_id": {"priority": 3, "normalise": "upper"}}})
    assert "types.crm_id.normalise\n  Input should be 'email', 'phone', 'none', 'lower'" in message


def test_regex_needs_a_pattern_and_a_pattern_needs_regex() -> None:
    message = validation_error({"types": {"crm_id": {"priority": 3, "normalise": "regex"}}})
    assert 'types.crm_id.pattern\n  Value error, pattern is required when normalise = "regex"' in (
        message
    )
    message = validation_error({"types": {"crm_id": {"priority": 3, "pattern": "x"}}})
    assert 'types.crm_id.pattern\n  Value error, pattern is only used when normalise = "regex"' in (
        message
    )


def test_window_needs_a_limit() -> None:
    message = validation_error({"types": {"crm_id": {"priority": 3, "window_days": 7}}})
    assert "types.crm_id.window_days\n  Value error, window_days needs a limit" in message


@pytest.mark.parametrize(
    ("config", "location"),
    [
        ({"types": {"Loyalty ID": {"priority": 3}}}, "types.Loyalty ID.[key]"),
        ({"types": {"crm_id": {"priority": 0}}}, "types.crm_id.priority"),
        ({"types": {"crm_id": {"priority": 3, "limit": 0}}}, "types.crm_id.limit"),
        ({"types": {"crm_id": {}}}, "types.crm_id.priority"),
        (
            {"types": {"crm_id": {"priority": 3, "sources": ["traits..id"]}}},
            "types.crm_id.sources.0",
        ),
    ],
)
def test_other_bad_type_settings_are_named(config: dict[str, Any], location: str) -> None:
    assert f"{location}\n" in validation_error(config)


# --- extraction ------------------------------------------------------------------------------


def test_identify_extraction_order_and_deduplication() -> None:
    message = {
        "type": "identify",
        "anonymousId": "anon-1",
        "traits": {"phone": "+44 20 7946 0958", "email": " Jane@Example.com "},
        "context": {
            "traits": {"email": "jane@EXAMPLE.com", "phone": "+442079460958"},
            "device": {"id": "dev-1", "advertisingId": "ad-1"},
        },
        "properties": {"email": "not-read@example.com"},
        "userId": "u-1",
    }
    found = Rules().extract(message)
    assert found.identifiers == [
        ("user_id", "u-1"),
        ("email", "jane@example.com"),
        ("phone", "+442079460958"),
        ("advertising_id", "ad-1"),
        ("device_id", "dev-1"),
        ("anonymous_id", "anon-1"),
    ]
    assert found.shared == []
    assert found.rejected == []


def test_two_different_emails_are_both_kept_in_path_order() -> None:
    message = {
        "type": "identify",
        "traits": {"email": "b@shop.com"},
        "context": {"traits": {"email": "a@shop.com"}},
    }
    assert Rules().extract(message).identifiers == [
        ("email", "b@shop.com"),
        ("email", "a@shop.com"),
    ]


def test_track_reads_properties_email() -> None:
    message = {"type": "track", "userId": 42, "properties": {"email": "Buyer@Shop.com"}}
    assert Rules().extract(message).identifiers == [
        ("user_id", "42"),
        ("email", "buyer@shop.com"),
    ]


def test_group_keeps_group_id_apart_and_ignores_group_traits() -> None:
    message = {
        "type": "group",
        "groupId": "acme",
        "userId": "u-1",
        "traits": {"email": "billing@acme.com", "phone": "+14155552671"},
        "context": {"traits": {"email": "jane@acme.com"}},
    }
    found = Rules().extract(message)
    assert found.identifiers == [("user_id", "u-1"), ("email", "jane@acme.com")]
    assert found.shared == [("group_id", "acme")]


def test_shared_group_id_from_any_message() -> None:
    message = {"type": "track", "anonymousId": "anon-1", "groupId": 7}
    found = Rules().extract(message)
    assert found.identifiers == [("anonymous_id", "anon-1")]
    assert found.shared == [("group_id", "7")]


def test_missing_paths_are_skipped() -> None:
    message = {
        "type": "identify",
        "userId": None,
        "traits": None,
        "context": "not an object",
        "anonymousId": "anon-1",
    }
    found = Rules().extract(message)
    assert found.identifiers == [("anonymous_id", "anon-1")]
    assert found.rejected == []


def test_rejected_values_and_reasons() -> None:
    message = {
        "type": "identify",
        "userId": "null",
        "anonymousId": "a" * 5000,
        "traits": {"email": {"address": "x@y.com"}, "phone": "12345"},
        "context": {
            "traits": {"email": "not-an-email", "phone": "12345"},
            "device": {"id": ["d1", "d2"], "advertisingId": 3.5},
        },
    }
    found = Rules().extract(message)
    assert found.identifiers == []
    assert found.rejected == [
        ("user_id", "null", "blocked value"),
        ("email", "{'address': 'x@y.com'}", "an object, not a single value"),
        (
            "email",
            "not-an-email",
            "not a valid e-mail address: An email address must have an @-sign.",
        ),
        (
            "phone",
            "12345",
            "phone number has no +country code and identity.default_region is not set",
        ),
        ("advertising_id", "3.5", "must be a string or an integer, not float"),
        ("device_id", "['d1', 'd2']", "a list, not a single value"),
        ("anonymous_id", "a" * 100, "longer than 4096 characters"),
    ]


def test_custom_type_from_sources() -> None:
    custom = rules(types={"loyalty_id": LOYALTY})
    message = {
        "type": "track",
        "userId": "u-1",
        "properties": {"loyalty_id": 12345678},
        "context": {"traits": {"loyalty_id": "LOY-12345678"}},
        "traits": {"loyalty_id": "bad"},
    }
    found = custom.extract(message)
    assert found.identifiers == [("user_id", "u-1"), ("loyalty_id", "12345678")]
    assert found.rejected == [
        ("loyalty_id", "bad", r"does not match pattern '(?:LOY-)?(\\d{6,10})'")
    ]


def test_builtin_type_with_own_sources() -> None:
    custom = rules(
        types={"email": {"priority": 2, "normalise": "email", "sources": ["traits.mail"]}}
    )
    message = {"type": "identify", "traits": {"email": "old@shop.com", "mail": "New@Shop.com"}}
    assert custom.extract(message).identifiers == [("email", "new@shop.com")]


def test_custom_priority_orders_extraction() -> None:
    message = {"type": "identify", "userId": "u-1", "traits": {}, "crm_id": "c-1"}
    custom = rules(types={"crm_id": {"priority": 1, "sources": ["crm_id"]}})
    assert custom.extract(message).identifiers == [("crm_id", "c-1"), ("user_id", "u-1")]


def test_message_without_type_reads_traits_but_not_properties() -> None:
    message = {"traits": {"email": "a@shop.com"}, "properties": {"email": "b@shop.com"}}
    assert Rules().extract(message).identifiers == [("email", "a@shop.com")]


# --- priority and limits ---------------------------------------------------------------------


def test_priority() -> None:
    assert [Rules().priority(name) for name in ("user_id", "email", "anonymous_id")] == [1, 2, 5]
    assert rules(types={"email": {"priority": 9}}).priority("email") == 9
    with pytest.raises(InvalidIdentifier, match="unknown identifier type 'crm_id'"):
        Rules().priority("crm_id")


def test_limit_without_window() -> None:
    default = Rules()
    long_ago = NOW - timedelta(days=3650)
    assert default.over_limit("user_id", [], NOW, 1) is False
    assert default.over_limit("user_id", [long_ago], NOW, 1) is True
    assert default.over_limit("user_id", [], NOW, 2) is True
    assert default.over_limit("email", [long_ago] * 4, NOW, 1) is False
    assert default.over_limit("email", [long_ago] * 4, NOW, 2) is True


def test_limit_with_window() -> None:
    default = Rules()
    recent = NOW - timedelta(days=1)
    stale = NOW - timedelta(days=30, seconds=1)
    edge = NOW - timedelta(days=30)
    assert default.over_limit("anonymous_id", [recent] * 49, NOW, 1) is False
    assert default.over_limit("anonymous_id", [recent] * 50, NOW, 1) is True
    assert default.over_limit("anonymous_id", [stale] * 500, NOW, 50) is False
    assert default.over_limit("anonymous_id", [stale] * 500 + [recent], NOW, 50) is True
    assert default.over_limit("anonymous_id", [edge] * 50, NOW, 1) is True


def test_unlimited_and_already_over() -> None:
    default = Rules()
    assert default.over_limit("group_id", [NOW] * 1000, NOW, 1000) is False
    assert default.over_limit("user_id", [NOW, NOW], NOW, 0) is True
    assert default.over_limit("user_id", [NOW], NOW, 0) is False
    with pytest.raises(ValueError, match="adding must not be negative"):
        default.over_limit("user_id", [], NOW, -1)
