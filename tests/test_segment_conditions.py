"""The condition language: what parses, and errors that point at the fault's path."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cdp.segments.conditions import (
    And,
    Catalog,
    ConditionError,
    EventCondition,
    Field,
    Not,
    Predicate,
    SegmentRef,
    is_time_dependent,
    parse,
)

TRAITS = {"plan": "string", "age": "number", "signed_up": "datetime", "vip": "boolean"}
CATALOG = Catalog(
    trait_type=lambda name: TRAITS.get(name),  # type: ignore[arg-type,return-value]
    computed={"orders": "number", "tags": "list"},
    segments=lambda key: key in {"vip", "buyers"},
)


def error(raw: object) -> str:
    with pytest.raises(ConditionError) as caught:
        parse(raw, CATALOG)
    return str(caught.value)


def test_a_tree_of_every_kind_parses():
    condition = parse(
        {
            "and": [
                {"trait": "plan", "op": "in", "value": ["pro", "team"]},
                {"computed": "orders", "op": ">=", "value": 2},
                {"score": "churn", "op": "<", "value": 0.3},
                {"identifier": "email", "op": "exists"},
                {"consent": "marketing", "channel": "email", "op": "=", "value": "granted"},
                {"not": {"segment": "vip"}},
                {
                    "event": "Order Completed",
                    "where": [{"property": "total", "op": ">", "value": 50}],
                    "within": "30d",
                    "count": {"op": ">=", "value": 2},
                },
            ]
        },
        CATALOG,
    )
    assert isinstance(condition, And) and len(condition.children) == 7
    event = condition.children[6]
    assert isinstance(event, EventCondition)
    assert event.events.name == "Order Completed"
    assert event.events.within == timedelta(days=30)
    assert event.events.where[0].path == ("properties", "total")
    assert event.test == Predicate(">=", 2)
    assert isinstance(condition.children[5], Not)
    assert condition.children[5].child == SegmentRef("vip")
    consent = condition.children[4]
    assert isinstance(consent, Field) and consent.channel == "email"
    assert is_time_dependent(condition)


def test_an_event_without_aggregate_means_at_least_once_and_star_means_any_name():
    condition = parse({"event": "*", "type": "page"}, CATALOG)
    assert isinstance(condition, EventCondition)
    assert condition.events.name is None and condition.events.type == "page"
    assert condition.test == Predicate(">=", 1) and condition.aggregate == "count"
    assert not is_time_dependent(condition)


def test_sum_takes_a_property_and_relative_dates_are_durations():
    condition = parse(
        {"event": "Order Completed", "sum": {"property": "total", "op": ">", "value": 100}},
        CATALOG,
    )
    assert isinstance(condition, EventCondition)
    assert condition.aggregate == "sum" and condition.property == ("properties", "total")
    relative = parse({"trait": "signed_up", "op": "within_last", "value": "2w"}, CATALOG)
    assert isinstance(relative, Field) and relative.test.value == timedelta(weeks=2)
    assert is_time_dependent(relative)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"and": [{"trait": "plan", "op": "≈", "value": 1}]},
            "definition.and[0].op: expected one of",
        ),
        (
            {"or": [{"trait": "age", "op": ">", "value": "old"}]},
            "definition.or[0].value: expected a number",
        ),
        (
            {"trait": "nickname", "op": ">", "value": 3},
            "definition.trait: unknown trait 'nickname'",
        ),
        ({"computed": "nope", "op": "=", "value": 1}, "definition.computed: no computed trait"),
        ({"segment": "ghost"}, "definition.segment: no segment has the key 'ghost'"),
        ({"trait": "plan", "op": "exists", "value": 1}, "definition.value: exists takes no value"),
        ({"trait": "plan", "op": "="}, "definition.value: = needs a value"),
        (
            {"trait": "age", "op": "between", "value": [1]},
            "definition.value: between needs [low, high]",
        ),
        ({"trait": "vip", "op": "=", "value": "yes"}, "definition.value: expected a boolean"),
        ({"trait": "plan", "op": "in", "value": []}, "definition.value: in needs a list"),
        (
            {"trait": "plan", "op": "in", "value": ["a", 1]},
            "definition.value[1]: expected a string",
        ),
        (
            {"trait": "age", "op": "within_last", "value": "7d"},
            "definition.op: within_last needs a datetime",
        ),
        (
            {"trait": "signed_up", "op": "within_last", "value": "soon"},
            "definition.value: expected a duration",
        ),
        ({"event": "Login", "within": "0d"}, "definition.within: expected a duration"),
        (
            {"event": "Login", "count": {"op": ">=", "value": "2"}},
            "definition.count.value: expected a number",
        ),
        (
            {"event": "Login", "count": {"op": ">="}, "sum": {}},
            "definition.sum: give at most one aggregate",
        ),
        (
            {"event": "Login", "sum": {"op": ">", "value": 1}},
            "definition.sum.property: expected a name",
        ),
        (
            {"event": "Login", "where": [{"property": "x", "op": "~", "value": 1}]},
            "definition.where[0].op",
        ),
        ({"event": "Login", "type": "click"}, "definition.type: expected track, page"),
        ({"event": "Login", "colour": "red"}, "definition.colour: unknown key here"),
        ({"trait": "plan", "score": "x", "op": "exists"}, "definition: expected exactly one of"),
        (
            {"consent": "ads", "op": "=", "value": "yes"},
            "definition.value: consent status is granted",
        ),
        ({"identifier": "email", "op": ">", "value": "a"}, "definition.op: expected one of exists"),
        ({"trait": 'pl"an', "op": "exists"}, "definition.trait: expected a name"),
        ({"trait": "a..b", "op": "exists"}, "definition.trait: empty part"),
        ({"and": []}, "definition.and: expected a non-empty list"),
        ({"not": [1]}, "definition.not: expected an object"),
        ([1, 2], "definition: expected an object"),
        (
            {"trait": "age", "op": "=", "value": float("nan")},
            "definition.value: NaN is not a value",
        ),
        (
            {"trait": "age", "op": ">", "value": float("inf")},
            "definition.value: expected a finite number",
        ),
    ],
)
def test_faults_name_their_path(raw, expected):
    assert expected in error(raw)


def test_hostile_depth_and_size_are_refused_not_crashed_on():
    deep: dict = {"trait": "plan", "op": "exists"}
    for _ in range(10_000):
        deep = {"not": deep}
    assert "nest at most" in error(deep)
    wide = {"or": [{"trait": "plan", "op": "exists"}] * 1000}
    assert "at most 256 nodes" in error(wide)
    huge_in = {"trait": "plan", "op": "in", "value": ["x"] * 1001}
    assert "in needs a list of 1 to 1000 values" in error(huge_in)


def test_untyped_traits_still_work_with_untyped_operators():
    condition = parse({"trait": "nickname", "op": "=", "value": "ada"}, CATALOG)
    assert isinstance(condition, Field) and condition.test == Predicate("=", "ada")
