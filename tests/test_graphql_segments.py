"""The GraphQL surface of segments, computed traits and scores: queries, mutations, the
membership subscription over WebSocket, scopes, and hostile definitions."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import gql
from identity_helpers import count, msg, owner, send
from sqlalchemy import event, update
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cdp.db.models import Event, Profile, Score, Segment, SegmentMembership
from cdp.runtime import Runtime

PRO = {"trait": "plan", "op": "=", "value": "pro"}
UPSERT = """mutation($k: String!, $d: JSON!, $name: String, $description: String) {
  upsertSegment(key: $k, definition: $d, name: $name, description: $description) {
    key name description definition size computedAt createdAt updatedAt
  }
}"""
UPSERT_COMPUTED = """mutation($k: String!, $d: JSON!) {
  upsertComputedTrait(key: $k, definition: $d) { key definition createdAt updatedAt }
}"""
MEMBERS = """query($k: String!, $first: Int!, $after: String) {
  segment(key: $k) {
    members(first: $first, after: $after) {
      edges { cursor node { id } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}"""
PREVIEW = """query($d: JSON!, $sample: Int) {
  previewSegment(definition: $d, sample: $sample) { size sample { id traits } }
}"""
SUBSCRIBE = """subscription($s: String!) {
  segmentMembershipChanged(segment: $s) { segmentKey profileId entered at }
}"""
TRANSPORT_WS = "graphql-transport-ws"


def identify(runtime: Runtime, user: str, **traits: Any) -> str:
    [accepted] = send(runtime, msg("identify", userId=user, traits=traits))
    assert accepted.profile_id is not None
    return accepted.profile_id


def upsert(client: TestClient, key: str, admin: str, definition: Any, **more: Any) -> dict:
    return gql(client, admin, UPSERT, k=key, d=definition, **more)


def error(body: dict) -> str:
    """The one error message of a response; fails on data or an internal error."""
    assert body.get("data") in (None, {}) or all(v is None for v in body["data"].values()), body
    [err] = body["errors"]
    assert err["message"] != "Internal server error"
    return err["message"]


# --- queries and mutations ---------------------------------------------------------------


def test_upsert_segment_then_read_it(client, runtime, api_keys):
    pros = [identify(runtime, f"p{i}", plan="pro") for i in range(2)]
    identify(runtime, "f", plan="free")
    body = upsert(client, "pro", api_keys["admin"], PRO, name="Pro plan", description="Paying")
    saved = body["data"]["upsertSegment"]
    assert saved["key"] == "pro"
    assert saved["name"] == "Pro plan"
    assert saved["description"] == "Paying"
    assert saved["definition"] == PRO
    assert saved["size"] == 2
    assert saved["computedAt"] is not None
    assert saved["createdAt"] == saved["updatedAt"]

    read = gql(
        client,
        api_keys["read"],
        """{ segments { key size } segment(key: "pro") { name size definition
             members(first: 10) { edges { node { id segments { key enteredAt } } } } } }""",
    )["data"]
    assert read["segments"] == [{"key": "pro", "size": 2}]
    assert read["segment"]["size"] == 2
    members = read["segment"]["members"]["edges"]
    assert [edge["node"]["id"] for edge in members] == sorted(pros)
    assert all(edge["node"]["segments"][0]["key"] == "pro" for edge in members)


def test_upsert_keeps_name_and_description_left_out(client, runtime, api_keys):
    upsert(client, "pro", api_keys["admin"], PRO, name="Pro", description="Paying")
    again = upsert(client, "pro", api_keys["admin"], {"trait": "plan", "op": "exists"})
    saved = again["data"]["upsertSegment"]
    assert (saved["name"], saved["description"]) == ("Pro", "Paying")
    assert saved["definition"] == {"trait": "plan", "op": "exists"}
    assert saved["updatedAt"] > saved["createdAt"]


def test_unknown_segment_is_null(client, api_keys):
    body = gql(client, api_keys["read"], '{ segment(key: "nope") { key } }')
    assert body["data"] == {"segment": None}
    assert "errors" not in body


def test_identify_moves_a_profile_into_and_out_of_a_segment(client, runtime, api_keys):
    upsert(client, "pro", api_keys["admin"], PRO)
    pid = identify(runtime, "u1", plan="pro")
    query = f'{{ profile(id: "{pid}") {{ segments {{ key enteredAt }} }} }}'
    [membership] = gql(client, api_keys["read"], query)["data"]["profile"]["segments"]
    assert membership["key"] == "pro"
    identify(runtime, "u1", plan="free")
    assert gql(client, api_keys["read"], query)["data"]["profile"]["segments"] == []
    assert gql(client, api_keys["read"], '{ segment(key: "pro") { size } }')["data"] == {
        "segment": {"size": 0}
    }


def test_members_pages_cover_every_member_once(client, runtime, api_keys):
    pros = sorted(identify(runtime, f"p{i}", plan="pro") for i in range(7))
    identify(runtime, "f", plan="free")
    upsert(client, "pro", api_keys["admin"], PRO)
    seen, after, pages = [], None, 0
    while True:
        body = gql(client, api_keys["read"], MEMBERS, k="pro", first=3, after=after)
        page = body["data"]["segment"]["members"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == pros
    assert pages == 3
    bad = gql(client, api_keys["read"], MEMBERS, k="pro", first=3, after="bm9wZQ==")
    assert error(bad) == "after: not a cursor returned by this API"
    assert error(gql(client, api_keys["read"], MEMBERS, k="pro", first=0)).startswith("first:")


def test_members_of_many_segments_in_one_request(client, runtime, api_keys):
    pro = identify(runtime, "p", plan="pro")
    free = identify(runtime, "f", plan="free")
    upsert(client, "pro", api_keys["admin"], PRO)
    upsert(client, "free", api_keys["admin"], {"trait": "plan", "op": "=", "value": "free"})
    upsert(client, "none", api_keys["admin"], {"trait": "plan", "op": "=", "value": "gold"})
    body = gql(
        client,
        api_keys["read"],
        "{ segments { key size members(first: 5) { edges { node { id } } } } }",
    )
    found = {
        s["key"]: (s["size"], [e["node"]["id"] for e in s["members"]["edges"]])
        for s in body["data"]["segments"]
    }
    assert found == {"free": (1, [free]), "none": (0, []), "pro": (1, [pro])}


def test_merged_away_profiles_are_not_members(client, runtime, api_keys):
    a = identify(runtime, "a", plan="pro")
    b = identify(runtime, "b", plan="pro")
    upsert(client, "pro", api_keys["admin"], PRO)
    with runtime.transaction() as session:  # as if b had been merged into a, memberships kept
        session.execute(update(Profile).where(Profile.id == b).values(merged_into=a))
    body = gql(client, api_keys["read"], MEMBERS, k="pro", first=10)
    assert [e["node"]["id"] for e in body["data"]["segment"]["members"]["edges"]] == [a]
    assert gql(client, api_keys["read"], '{ segment(key: "pro") { size } }')["data"] == {
        "segment": {"size": 1}
    }


def test_preview_counts_and_samples_without_saving(client, runtime, api_keys):
    pros = sorted(identify(runtime, f"p{i}", plan="pro") for i in range(4))
    identify(runtime, "f", plan="free")
    before = [count(runtime, model) for model in (Segment, SegmentMembership, Event)]
    body = gql(client, api_keys["read"], PREVIEW, d=PRO, sample=2)
    preview = body["data"]["previewSegment"]
    assert preview["size"] == 4
    assert [p["id"] for p in preview["sample"]] == pros[:2]
    assert preview["sample"][0]["traits"]["plan"] == "pro"
    default = gql(client, api_keys["read"], PREVIEW, d=PRO)["data"]["previewSegment"]
    assert len(default["sample"]) == 4
    assert gql(client, api_keys["read"], PREVIEW, d=PRO, sample=0)["data"]["previewSegment"] == {
        "size": 4,
        "sample": [],
    }
    assert [count(runtime, model) for model in (Segment, SegmentMembership, Event)] == before
    assert error(gql(client, api_keys["read"], PREVIEW, d=PRO, sample=1000)).startswith("sample:")
    bad = gql(client, api_keys["read"], PREVIEW, d={"trait": "plan", "op": "~"})
    assert error(bad).startswith("definition.op: expected one of")


def test_computed_traits(client, runtime, api_keys):
    buyer = identify(runtime, "buyer", plan="pro")
    idle = identify(runtime, "idle", plan="pro")
    send(
        runtime,
        *[
            msg("track", userId="buyer", event="Order Completed", properties={"total": t})
            for t in (5, 7)
        ],
    )
    orders = {"aggregate": "count", "event": "Order Completed"}
    spent = {"aggregate": "sum", "event": "Order Completed", "property": "total"}
    saved = gql(client, api_keys["admin"], UPSERT_COMPUTED, k="orders", d=orders)
    assert saved["data"]["upsertComputedTrait"]["definition"] == orders
    gql(client, api_keys["admin"], UPSERT_COMPUTED, k="spent", d=spent)
    listed = gql(client, api_keys["read"], "{ computedTraits { key definition createdAt } }")
    assert [t["key"] for t in listed["data"]["computedTraits"]] == ["orders", "spent"]

    query = '{ profile(id: "%s") { computedTraits } }'
    values = gql(client, api_keys["read"], query % buyer)["data"]["profile"]["computedTraits"]
    assert values == {"orders": 2, "spent": 12}
    # A count reads as 0 on a profile without such events; a sum stays missing.
    values = gql(client, api_keys["read"], query % idle)["data"]["profile"]["computedTraits"]
    assert values == {"orders": 0}

    # A segment reading it, kept current by ingestion.
    upsert(client, "buyers", api_keys["admin"], {"computed": "orders", "op": ">=", "value": 3})
    assert gql(client, api_keys["read"], '{ segment(key: "buyers") { size } }')["data"] == {
        "segment": {"size": 0}
    }
    send(runtime, msg("track", userId="buyer", event="Order Completed", properties={"total": 1}))
    body = gql(client, api_keys["read"], MEMBERS, k="buyers", first=5)
    assert [e["node"]["id"] for e in body["data"]["segment"]["members"]["edges"]] == [buyer]

    # Refused while a segment reads it; deleted once not.
    delete = "mutation($k: String!) { deleteComputedTrait(key: $k) }"
    assert "used by the segments buyers" in error(
        gql(client, api_keys["admin"], delete, k="orders")
    )
    assert gql(client, api_keys["admin"], 'mutation { deleteSegment(key: "buyers") }')["data"] == {
        "deleteSegment": True
    }
    assert gql(client, api_keys["admin"], delete, k="orders")["data"] == {
        "deleteComputedTrait": True
    }
    values = gql(client, api_keys["read"], query % buyer)["data"]["profile"]["computedTraits"]
    assert values == {"spent": 13}
    assert error(gql(client, api_keys["admin"], delete, k="orders")) == (
        "key: no computed trait has the key 'orders'"
    )


def test_scores(client, runtime, api_keys):
    pid = identify(runtime, "u", plan="pro")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    with runtime.transaction() as session:
        session.add(
            Score(profile_id=pid, name="churn", value=0.25, model_version="v3", scored_at=at)
        )
        session.add(Score(profile_id=pid, name="persona", label="bargain hunter", scored_at=at))
    query = f'{{ profile(id: "{pid}") {{ scores {{ name value label modelVersion scoredAt }} }} }}'
    assert gql(client, api_keys["read"], query)["data"]["profile"]["scores"] == [
        {"name": "churn", "value": 0.25, "label": None, "modelVersion": "v3",
         "scoredAt": "2026-03-01T00:00:00+00:00"},
        {"name": "persona", "value": None, "label": "bargain hunter", "modelVersion": None,
         "scoredAt": "2026-03-01T00:00:00+00:00"},
    ]  # fmt: skip


def test_profile_relations_cost_the_same_for_few_or_many_profiles(client, runtime, api_keys):
    upsert(client, "pro", api_keys["admin"], PRO)
    gql(client, api_keys["admin"], UPSERT_COMPUTED, k="n", d={"aggregate": "count", "event": "*"})
    query = """{ profiles(first: 20) { edges { node {
        id segments { key } scores { name } computedTraits identifiers { type } } } } }"""
    statements: list[str] = []

    def counted() -> int:
        statements.clear()
        body = gql(client, api_keys["read"], query)
        assert "errors" not in body
        return len(statements)

    def record(conn, cursor, statement, *args):
        if not threading.current_thread().name.startswith("cdp-"):  # not the writer's polls
            statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        identify(runtime, "a", plan="pro")
        few = counted()
        for i in range(8):
            identify(runtime, f"u{i}", plan="pro" if i % 2 else "free")
        assert counted() == few
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)


def test_delete_segment(client, runtime, api_keys):
    identify(runtime, "u", plan="pro")
    upsert(client, "pro", api_keys["admin"], PRO)
    upsert(client, "pro_too", api_keys["admin"], {"segment": "pro"})
    delete = "mutation($k: String!) { deleteSegment(key: $k) }"
    used = error(gql(client, api_keys["admin"], delete, k="pro"))
    assert used == "key: segment 'pro' is used by the segments pro_too"
    assert gql(client, api_keys["admin"], delete, k="pro_too")["data"] == {"deleteSegment": True}
    assert gql(client, api_keys["admin"], delete, k="pro")["data"] == {"deleteSegment": True}
    assert gql(client, api_keys["read"], "{ segments { key } }")["data"] == {"segments": []}
    assert count(runtime, SegmentMembership) == 0
    assert error(gql(client, api_keys["admin"], delete, k="pro")) == (
        "key: no segment has the key 'pro'"
    )


def test_recompute_segments(client, runtime, api_keys):
    a = identify(runtime, "a", plan="pro")
    identify(runtime, "b", plan="free")
    upsert(client, "pro", api_keys["admin"], PRO)
    upsert(client, "free", api_keys["admin"], {"trait": "plan", "op": "=", "value": "free"})
    recompute = "mutation($keys: [String!]) { recomputeSegments(keys: $keys) }"
    assert gql(client, api_keys["admin"], recompute)["data"] == {"recomputeSegments": 0}
    with runtime.transaction() as session:  # changed behind the pipeline's back
        session.execute(update(Profile).where(Profile.id == a).values(traits={"plan": "free"}))
    assert gql(client, api_keys["admin"], recompute, keys=["free"])["data"] == {
        "recomputeSegments": 1
    }
    assert gql(client, api_keys["admin"], recompute)["data"] == {"recomputeSegments": 1}  # pro
    assert gql(client, api_keys["read"], '{ segment(key: "pro") { size } }')["data"] == {
        "segment": {"size": 0}
    }
    unknown = error(gql(client, api_keys["admin"], recompute, keys=["free", "nope"]))
    assert unknown == "keys: no segment has the key 'nope'"


# --- scopes -----------------------------------------------------------------------------------

ADMIN_ONLY = [
    ('mutation { upsertSegment(key: "s", definition: {trait: "a", op: "exists"}) { key } }'),
    'mutation { deleteSegment(key: "s") }',
    ('mutation { upsertComputedTrait(key: "c", definition: {aggregate: "count", event: "*"}) '
     "{ key } }"),
    'mutation { deleteComputedTrait(key: "c") }',
    "mutation { recomputeSegments }",
]  # fmt: skip
READABLE = [
    "{ segments { key } }",
    '{ segment(key: "s") { key } }',
    '{ previewSegment(definition: {trait: "a", op: "exists"}) { size } }',
    "{ computedTraits { key } }",
]


@pytest.mark.parametrize("mutation", ADMIN_ONLY)
def test_read_key_cannot_change_segments(client, runtime, api_keys, mutation):
    body = gql(client, api_keys["read"], mutation)
    assert body["_status"] == 403
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert body["errors"][0]["message"] == "this field needs an API key with the 'admin' scope"
    assert count(runtime, Segment) == 0


@pytest.mark.parametrize("query", READABLE)
def test_collect_key_cannot_read_segments(client, api_keys, query):
    body = gql(client, api_keys["collect"], query)
    assert body["_status"] == 403
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert gql(client, api_keys["read"], query)["_status"] == 200


# --- hostile and malformed input ---------------------------------------------------------------


def nested(depth: int) -> dict:
    node: dict = PRO
    for _ in range(depth):
        node = {"not": node}
    return node


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        ("plan = pro", "definition: expected a JSON object"),
        (42, "definition: expected a JSON object"),
        ([PRO], "definition: expected a JSON object"),
        ({}, "definition: expected an object"),
        ({"trait": "plan", "op": "~", "value": 1}, "definition.op: expected one of"),
        ({"and": [PRO, {"trait": "plan", "op": "like", "value": "p%"}]},
         "definition.and[1].op: expected one of"),
        ({"and": []}, "definition.and: expected a non-empty list"),
        ({"or": PRO}, "definition.or: expected a non-empty list"),
        ({"trait": "plan", "op": "=", "value": "pro", "extra": 1}, "definition.extra: unknown key"),
        ({"trait": 7, "op": "exists"}, "definition.trait: expected a name"),
        ({"trait": "plan", "op": "=", "value": {"$gt": ""}},
         "definition.value: expected a string, number or boolean"),
        ({"trait": "plan", "op": "in", "value": list(range(5000))},
         "definition.value: in needs a list of 1 to 1000 values"),
        ({"trait": "plan", "op": "in", "value": ["a", 1]},
         "definition.value[1]: expected a string, got 1"),
        ({"trait": "plan", "op": "between", "value": [1]}, "definition.value: between needs"),
        ({"event": "Order Completed", "within": "forever"},
         "definition.within: expected a duration"),
        ({"trait": "plan", "op": "within_last", "value": "7d"},
         "definition.op: within_last needs a datetime, not a string"),
        ({"trait": "nobody_has_it", "op": ">", "value": 1},
         "definition.trait: unknown trait 'nobody_has_it'"),
        ({"event": "Order Completed", "count": {"op": ">=", "value": "two"}},
         "definition.count.value: expected a number"),
        ({"computed": "nope", "op": ">", "value": 1},
         "definition.computed: no computed trait has the key 'nope'"),
        ({"segment": "nope"}, "definition.segment: no segment has the key 'nope'"),
        (nested(20), "definition" + ".not" * 17 + ": conditions nest at most 16 deep"),
        ({"or": [PRO] * 300}, "definition.or[255]: a condition may have at most 256 nodes"),
        # Valid conditions the store could not hold or bind:
        ({"and": [PRO, {"trait": "plan", "op": "=", "value": "a\x00b"}]},
         "definition.and[1].value: contains a NUL character"),
        ({"event": "E", "where": [{"property": "p", "op": "in", "value": ["a", "b\x00"]}]},
         "definition.where[0].value[1]: contains a NUL character"),
        ({"trait": "age", "op": ">", "value": 10**30},
         "definition.value: integers are limited to 64 bits"),
        ({"event": "E", "sum": {"property": "p", "op": ">", "value": -(10**19)}},
         "definition.sum.value: integers are limited to 64 bits"),
        ({"trait": "plan", "op": "=", "value": "x" * 300_000},
         "definition: longer than 262144 characters in all"),
    ],
)  # fmt: skip
def test_bad_definitions_are_refused_naming_the_path(
    client, runtime, api_keys, definition, expected
):
    identify(runtime, "u", plan="pro")
    body = upsert(client, "s", api_keys["admin"], definition)
    assert error(body).startswith(expected), body
    assert body["errors"][0]["path"] == ["upsertSegment"]
    preview = gql(client, api_keys["read"], PREVIEW, d=definition)
    if not expected.startswith("definition: expected a JSON object"):
        assert error(preview).startswith(expected)
    assert count(runtime, Segment) == 0


def test_unpaired_surrogates_are_refused(client, runtime, api_keys):
    definition = '{"trait": "plan", "op": "in", "value": ["a", "\\ud800"]}'
    body = json.dumps({"query": UPSERT, "variables": {"k": "s"}})[:-2] + f', "d": {definition}}}}}'
    response = client.post(
        "/graphql",
        content=body,
        headers={
            "Authorization": f"Bearer {api_keys['admin']}",
            "content-type": "application/json",
        },
    )
    message = error(response.json())
    assert message == "definition.value[1]: contains an unpaired surrogate"
    assert count(runtime, Segment) == 0


def test_keys_no_segment_can_have(client, api_keys):
    for key in ("a\x00", "x" * 200, ""):
        body = gql(
            client, api_keys["read"], "query($k: String!) { segment(key: $k) { key } }", k=key
        )
        assert body["data"] == {"segment": None}
        delete = gql(
            client, api_keys["admin"], "mutation($k: String!) { deleteSegment(key: $k) }", k=key
        )
        assert error(delete).startswith("key: a segment key is 1 to 128 letters")
    delete = "mutation($k: String!) { deleteComputedTrait(key: $k) }"
    assert error(gql(client, api_keys["admin"], delete, k="\x00")).startswith("key: a computed")


@pytest.mark.parametrize(
    ("key", "definition", "expected"),
    [
        ("bad key!", PRO, "key: a segment key is 1 to 128 letters"),
        ("x" * 129, PRO, "key: a segment key is 1 to 128 letters"),
        ("", PRO, "key: a segment key"),
        ("a\x00", PRO, "key: a segment key"),
    ],
)
def test_bad_keys_are_refused(client, api_keys, key, definition, expected):
    assert error(upsert(client, key, api_keys["admin"], definition)).startswith(expected)


def test_bad_names_are_refused(client, runtime, api_keys):
    assert error(upsert(client, "s", api_keys["admin"], PRO, name="n" * 256)) == (
        "name: at most 255 characters (got 256)"
    )
    assert error(upsert(client, "s", api_keys["admin"], PRO, description="a\x00b")) == (
        "description: contains a NUL character"
    )
    assert count(runtime, Segment) == 0


def test_wrong_argument_types_are_validation_errors(client, api_keys):
    body = gql(
        client, api_keys["admin"], "mutation { upsertSegment(key: 5, definition: {}) { key } }"
    )
    assert "String cannot represent a non string value" in error(body)
    body = gql(client, api_keys["admin"], 'mutation { upsertSegment(key: "s") { key } }')
    assert "upsertSegment(definition:)' of type 'JSON!' is required" in error(body)
    body = gql(client, api_keys["admin"], UPSERT, k="s", d=None)
    assert "Variable '$d' has invalid value" in error(body)
    body = gql(client, api_keys["read"], PREVIEW, d=PRO, sample="ten")
    assert "Int cannot represent non-integer value" in error(body)


def test_cycle_between_two_segments_is_refused(client, runtime, api_keys):
    identify(runtime, "u", plan="pro")
    upsert(client, "a", api_keys["admin"], PRO)
    upsert(client, "b", api_keys["admin"], {"segment": "a"})
    body = upsert(client, "a", api_keys["admin"], {"and": [PRO, {"segment": "b"}]})
    assert error(body).startswith("definition: segments would refer to each other: ")
    assert {"a", "b"} <= set(error(body).split(": ", 2)[2].split(" → "))
    self_ref = upsert(client, "a", api_keys["admin"], {"segment": "a"})
    assert error(self_ref).startswith("definition: segments would refer to each other")
    # Nothing changed.
    assert gql(client, api_keys["read"], '{ segment(key: "a") { definition } }')["data"] == {
        "segment": {"definition": PRO}
    }


def test_bad_computed_trait_definitions_are_refused(client, runtime, api_keys):
    cases = [
        ("not an object", "definition: expected an object"),
        ({"aggregate": "median", "event": "*"}, "definition.aggregate: expected one of"),
        ({"aggregate": "sum", "event": "*"}, "definition.property: expected a name"),
        ({"aggregate": "count"}, "definition.event: name the event"),
        ({"aggregate": "count", "event": "*", "within": "1y"}, "definition.within: expected"),
    ]
    for definition, expected in cases:
        body = gql(client, api_keys["admin"], UPSERT_COMPUTED, k="c", d=definition)
        assert error(body).startswith(expected), body
    body = gql(client, api_keys["admin"], UPSERT_COMPUTED, k="bad key", d={"aggregate": "count"})
    assert error(body).startswith("key:")


def test_ten_thousand_deep_definition_is_refused_naming_where(client, runtime, api_keys):
    depth = 10_000
    raw = "{" + '"not": {' * depth + '"trait": "plan", "op": "exists"' + "}" * depth + "}"
    body = json.dumps({"query": UPSERT, "variables": {"k": "s"}})[:-2] + f', "d": {raw}}}}}'
    response = client.post(
        "/graphql",
        content=body,
        headers={
            "Authorization": f"Bearer {api_keys['admin']}",
            "content-type": "application/json",
        },
    )
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "message": "variables.d.not.not…: nested too deeply",
                "extensions": {"code": "BAD_REQUEST"},
            }
        ]
    }
    assert count(runtime, Segment) == 0


def test_body_that_is_not_utf8_is_refused(client, api_keys):
    response = client.post(
        "/graphql",
        content=b'{"query": "{ segments { key } }", "x": "\xff"}',
        headers={"Authorization": f"Bearer {api_keys['read']}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"].startswith("the request body is not valid JSON")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(client, api_keys, constant):
    definition = f'{{"trait": "n", "op": "=", "value": {constant}}}'
    body = json.dumps({"query": UPSERT, "variables": {"k": "s"}})[:-2] + f', "d": {definition}}}}}'
    response = client.post(
        "/graphql",
        content=body,
        headers={
            "Authorization": f"Bearer {api_keys['admin']}",
            "content-type": "application/json",
        },
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"].startswith("the request body is not valid JSON")


# --- the subscription -------------------------------------------------------------------------


def wait_for_subscriber(runtime: Runtime, topic: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not runtime.bus.subscribers(topic):
        assert time.monotonic() < deadline, f"nobody subscribed to {topic}"
        time.sleep(0.01)


def test_subscription_receives_entered_when_an_identify_makes_a_profile_match(
    client, runtime, api_keys
):
    upsert(client, "pro", api_keys["admin"], PRO)
    headers = {"Authorization": f"Bearer {api_keys['read']}"}
    with client.websocket_connect("/graphql", [TRANSPORT_WS], headers=headers) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json(
            {
                "type": "subscribe",
                "id": "1",
                "payload": {"query": SUBSCRIBE, "variables": {"s": "pro"}},
            }
        )
        wait_for_subscriber(runtime, "segment:pro")
        identify(runtime, "other", plan="free")  # no change to the segment: nothing sent
        pid = identify(runtime, "u1", plan="pro")
        message = ws.receive_json()
        assert message["type"] == "next" and message["id"] == "1"
        change = message["payload"]["data"]["segmentMembershipChanged"]
        assert change["segmentKey"] == "pro"
        assert change["profileId"] == pid
        assert change["entered"] is True
        assert datetime.fromisoformat(change["at"]).tzinfo is not None
        identify(runtime, "u1", plan="free")
        left = ws.receive_json()["payload"]["data"]["segmentMembershipChanged"]
        assert (left["profileId"], left["entered"]) == (pid, False)
        ws.send_json({"type": "complete", "id": "1"})
    deadline = time.monotonic() + 5
    while runtime.bus.subscribers("segment:pro"):  # unsubscribed when the socket closed
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_subscription_with_the_key_in_connection_init(client, runtime, api_keys):
    upsert(client, "pro", api_keys["admin"], PRO)
    with client.websocket_connect("/graphql", [TRANSPORT_WS]) as ws:
        init = {
            "type": "connection_init",
            "payload": {"Authorization": f"Bearer {api_keys['admin']}"},
        }
        ws.send_json(init)
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json(
            {
                "type": "subscribe",
                "id": "s",
                "payload": {"query": SUBSCRIBE, "variables": {"s": "pro"}},
            }
        )
        wait_for_subscriber(runtime, "segment:pro")
        gql(client, api_keys["admin"], "mutation { recomputeSegments }")
        pid = identify(runtime, "u", plan="pro")
        change = ws.receive_json()["payload"]["data"]["segmentMembershipChanged"]
        assert (change["profileId"], change["entered"]) == (pid, True)


def test_subscription_over_the_older_graphql_ws_protocol(client, runtime, api_keys):
    upsert(client, "pro", api_keys["admin"], PRO)
    with client.websocket_connect("/graphql", ["graphql-ws"]) as ws:
        ws.send_json(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {api_keys['read']}"}}
        )
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json(
            {"type": "start", "id": "1", "payload": {"query": SUBSCRIBE, "variables": {"s": "pro"}}}
        )
        wait_for_subscriber(runtime, "segment:pro")
        pid = identify(runtime, "u", plan="pro")
        message = ws.receive_json()
        assert message["type"] == "data"
        assert message["payload"]["data"]["segmentMembershipChanged"]["profileId"] == pid


def test_queries_over_one_socket_see_fresh_data(client, runtime, api_keys):
    upsert(client, "pro", api_keys["admin"], PRO)
    headers = {"Authorization": f"Bearer {api_keys['read']}"}
    query = {"query": '{ segment(key: "pro") { size } }'}
    with client.websocket_connect("/graphql", [TRANSPORT_WS], headers=headers) as ws:
        ws.send_json({"type": "connection_init"})
        ws.receive_json()
        sizes = []
        for i in range(2):
            ws.send_json({"type": "subscribe", "id": str(i), "payload": query})
            sizes.append(ws.receive_json()["payload"]["data"]["segment"]["size"])
            assert ws.receive_json() == {"id": str(i), "type": "complete"}
            identify(runtime, f"u{i}", plan="pro")
    assert sizes == [0, 1]


def test_subscription_to_an_unknown_segment_is_an_error(client, api_keys):
    headers = {"Authorization": f"Bearer {api_keys['read']}"}
    with client.websocket_connect("/graphql", [TRANSPORT_WS], headers=headers) as ws:
        ws.send_json({"type": "connection_init"})
        ws.receive_json()
        ws.send_json(
            {
                "type": "subscribe",
                "id": "1",
                "payload": {"query": SUBSCRIBE, "variables": {"s": "x"}},
            }
        )
        message = ws.receive_json()
        assert message["id"] == "1"
        assert message["payload"]["errors"][0]["message"] == "segment: no segment has the key 'x'"
        assert ws.receive_json() == {"id": "1", "type": "complete"}


def test_internal_errors_in_a_subscription_are_masked(client, runtime, api_keys, monkeypatch):
    upsert(client, "pro", api_keys["admin"], PRO)

    async def broken(topic: str):
        raise RuntimeError("secret connection string")
        yield  # an async generator

    monkeypatch.setattr(runtime.bus, "subscribe", broken)
    headers = {"Authorization": f"Bearer {api_keys['read']}"}
    with client.websocket_connect("/graphql", [TRANSPORT_WS], headers=headers) as ws:
        ws.send_json({"type": "connection_init"})
        ws.receive_json()
        ws.send_json(
            {
                "type": "subscribe",
                "id": "1",
                "payload": {"query": SUBSCRIBE, "variables": {"s": "pro"}},
            }
        )
        message = ws.receive_json()
        assert message["payload"]["errors"][0]["message"] == "Internal server error"
        assert "secret" not in json.dumps(message)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"Authorization": "Bearer cdp_not-a-real-key"},
        {"Authorization": "cdp_raw-key-without-scheme"},
        {"Authorization": ["Bearer x"]},
        {"Authorization": "collect"},  # replaced by a valid key without the read scope
    ],
)
def test_unauthenticated_socket_is_refused(client, runtime, api_keys, payload):
    if payload == {"Authorization": "collect"}:
        payload = {"Authorization": f"Bearer {api_keys['collect']}"}
    with client.websocket_connect("/graphql", [TRANSPORT_WS]) as ws:
        ws.send_json({"type": "connection_init", **({"payload": payload} if payload else {})})
        with pytest.raises(WebSocketDisconnect) as refused:
            ws.receive_json()
    assert refused.value.code == 4403


def test_subscribing_without_connection_init_is_refused(client, runtime, api_keys):
    upsert(client, "pro", api_keys["admin"], PRO)
    with client.websocket_connect("/graphql", [TRANSPORT_WS]) as ws:
        ws.send_json(
            {
                "type": "subscribe",
                "id": "1",
                "payload": {"query": SUBSCRIBE, "variables": {"s": "pro"}},
            }
        )
        with pytest.raises(WebSocketDisconnect) as refused:
            ws.receive_json()
    assert refused.value.code == 4401
    assert runtime.bus.subscribers("segment:pro") == 0


def test_wrong_key_in_the_upgrade_request_is_refused_at_the_handshake(client):
    headers = {"Authorization": "Bearer cdp_not-a-real-key"}
    with pytest.raises(WebSocketDisconnect) as refused:  # noqa: SIM117
        with client.websocket_connect("/graphql", [TRANSPORT_WS], headers=headers):
            pass
    assert refused.value.code == 1008


def test_older_protocol_refuses_an_unauthenticated_socket(client):
    with client.websocket_connect("/graphql", ["graphql-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {}})
        refusal = ws.receive_json()
        assert refusal["type"] == "connection_error"
        assert "read" in refusal["payload"]["message"]


def test_subscription_through_a_live_server(live_server, runtime, api_keys):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with runtime.transaction() as session:
        session.add(Segment(key="pro", name="pro", description="", definition=PRO))
    url = live_server.replace("http://", "ws://") + "/graphql"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, subprotocols=[TRANSPORT_WS], additional_headers={"Authorization": "Bearer x"})
    assert refused.value.response.status_code == 403
    headers = {"Authorization": f"Bearer {api_keys['read']}"}
    with connect(url, subprotocols=[TRANSPORT_WS], additional_headers=headers) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "connection_ack"}
        subscribe = {"query": SUBSCRIBE, "variables": {"s": "pro"}}
        ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": subscribe}))
        wait_for_subscriber(runtime, "segment:pro")
        pid = identify(runtime, "u", plan="pro")
        change = json.loads(ws.recv(timeout=5))["payload"]["data"]["segmentMembershipChanged"]
        assert (change["profileId"], change["entered"]) == (pid, True)
        assert owner(runtime, "user_id", "u") == pid
