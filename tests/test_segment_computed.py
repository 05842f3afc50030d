"""Computed traits: every aggregate, filters and windows, kept current as events arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from identity_helpers import msg, owner, send
from sqlalchemy import select

from cdp.db.models import Profile
from cdp.errors import UserError
from cdp.segments import service
from cdp.segments.conditions import ConditionError

NOW = datetime.now(UTC)


def computed(runtime, user_id: str) -> dict:
    with runtime.sessions() as session:
        return session.scalar(
            select(Profile.computed_traits).where(Profile.id == owner(runtime, "user_id", user_id))
        )


def view(user: str, category: str, price: float, days_ago: float, currency: str = "EUR"):
    at = NOW - timedelta(days=days_ago)
    props = {"category": category, "price": price, "currency": currency}
    return msg("track", at, userId=user, event="Product Viewed", properties=props)


AGGREGATES = {
    "views": {"aggregate": "count", "event": "Product Viewed"},
    "views_7d": {"aggregate": "count", "event": "Product Viewed", "within": "7d"},
    "spend": {"aggregate": "sum", "event": "Product Viewed", "property": "price"},
    "cheapest": {"aggregate": "min", "event": "Product Viewed", "property": "price"},
    "dearest": {"aggregate": "max", "event": "Product Viewed", "property": "price"},
    "mean": {"aggregate": "avg", "event": "Product Viewed", "property": "price"},
    "first_cat": {"aggregate": "first", "event": "Product Viewed", "property": "category"},
    "last_cat": {"aggregate": "last", "event": "Product Viewed", "property": "category"},
    "fav_cat": {"aggregate": "most_frequent", "event": "Product Viewed", "property": "category"},
    "cats": {"aggregate": "unique_list", "event": "Product Viewed", "property": "category"},
    "n_cats": {"aggregate": "unique_count", "event": "Product Viewed", "property": "category"},
    "eur_spend": {
        "aggregate": "sum",
        "event": "Product Viewed",
        "property": "price",
        "where": [{"property": "currency", "op": "=", "value": "EUR"}],
    },
    "any_events": {"aggregate": "count", "event": "*", "type": "track"},
}


def test_every_aggregate_on_both_backends_and_incrementally(runtime):
    send(
        runtime,
        view("ada", "shoes", 40, 20),
        view("ada", "books", 10, 10),
        view("ada", "shoes", 70, 3, currency="USD"),
        view("bob", "garden", 5, 1),
    )
    for key, definition in AGGREGATES.items():
        service.upsert_computed(runtime, key, definition)
    ada = computed(runtime, "ada")
    assert ada["views"] == 3 and ada["views_7d"] == 1
    assert ada["spend"] == 120 and ada["eur_spend"] == 50
    assert (ada["cheapest"], ada["dearest"]) == (10, 70)
    assert ada["mean"] == pytest.approx(40)
    assert (ada["first_cat"], ada["last_cat"], ada["fav_cat"]) == ("shoes", "shoes", "shoes")
    assert sorted(ada["cats"]) == ["books", "shoes"] and ada["n_cats"] == 2
    assert ada["any_events"] == 3
    assert computed(runtime, "bob")["cats"] == ["garden"]

    # Incremental: new events change only what they feed.
    send(runtime, view("ada", "books", 15, 0), view("ada", "books", 5, 0))
    ada = computed(runtime, "ada")
    assert ada["views"] == 5 and ada["views_7d"] == 3 and ada["spend"] == 140
    assert ada["fav_cat"] == "books" and ada["last_cat"] == "books"
    assert ada["first_cat"] == "shoes"


def test_a_profile_without_events_has_no_value_and_counts_read_zero(runtime):
    send(runtime, msg("identify", NOW, userId="ada", traits={"plan": "pro"}))
    service.upsert_computed(runtime, "views", AGGREGATES["views"])
    service.upsert_computed(runtime, "spend", AGGREGATES["spend"])
    assert computed(runtime, "ada") == {}
    service.upsert_segment(runtime, "no_views", {"computed": "views", "op": "=", "value": 0})
    preview = service.preview(runtime, {"computed": "views", "op": "=", "value": 0})
    assert preview.size == 1
    assert service.preview(runtime, {"computed": "spend", "op": "=", "value": 0}).size == 0


def test_changing_and_deleting_a_definition_rewrites_the_values(runtime):
    send(runtime, view("ada", "shoes", 40, 20), view("ada", "books", 10, 1))
    service.upsert_computed(runtime, "views", AGGREGATES["views"])
    assert computed(runtime, "ada") == {"views": 2}
    service.upsert_computed(runtime, "views", AGGREGATES["views_7d"])
    assert computed(runtime, "ada") == {"views": 1}
    service.upsert_segment(runtime, "viewers", {"computed": "views", "op": ">=", "value": 1})
    with pytest.raises(UserError, match="used by the segments viewers"):
        service.delete_computed(runtime, "views")
    with pytest.raises(UserError, match="would change the type"):
        service.upsert_computed(runtime, "views", AGGREGATES["cats"])
    service.delete_segment(runtime, "viewers")
    service.delete_computed(runtime, "views")
    assert computed(runtime, "ada") == {}


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        ({"aggregate": "median", "event": "x"}, "definition.aggregate: expected one of"),
        ({"aggregate": "sum", "event": "x"}, "definition.property: expected a name"),
        ({"aggregate": "count"}, "definition.event: name the event"),
        ({"aggregate": "count", "event": "x", "property": "p"}, "count takes no property"),
        ({"aggregate": "count", "event": "x", "within": "forever"}, "definition.within"),
        ({"aggregate": "count", "event": "x", "extra": 1}, "definition.extra: unknown key"),
        ("count", "definition: expected an object"),
    ],
)
def test_bad_definitions_name_the_key(runtime, definition, expected):
    with pytest.raises(ConditionError, match=expected.replace("[", r"\[")):
        service.upsert_computed(runtime, "x", definition)


def test_bad_keys_are_refused(runtime):
    with pytest.raises(UserError, match="key: a computed trait key is 1 to 128"):
        service.upsert_computed(runtime, "has space", AGGREGATES["views"])
    with pytest.raises(UserError, match="key: a segment key"):
        service.upsert_segment(runtime, "x" * 200, {"trait": "plan", "op": "exists"})
