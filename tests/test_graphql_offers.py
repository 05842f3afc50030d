"""The GraphQL surface of offers: the `offers` query, `upsertOffer` and `deleteOffer`, their
scopes, and errors that name the faulty path, hostile input included."""

from __future__ import annotations

import json

import pytest
from conftest import gql
from identity_helpers import count

from cdp.db.models import Offer

OFFER_FIELDS = """id provider key name value cost priority levers tags validFrom validUntil
budget propensity channels eligibility definition"""
OFFERS = f"{{ offers {{ {OFFER_FIELDS} }} }}"
UPSERT = f"""mutation($d: JSON!, $p: String!) {{
  upsertOffer(definition: $d, provider: $p) {{ {OFFER_FIELDS} }}
}}"""
UPSERT_DEFAULT = "mutation($d: JSON!) { upsertOffer(definition: $d) { id } }"
DELETE = "mutation($id: String!) { deleteOffer(id: $id) }"
WELCOME = {
    "key": "welcome",
    "name": "Welcome discount",
    "value": 10,
    "content": {
        "email": {
            "subject": "Hi {{ profile.traits.first_name | default('there') }}",
            "html": "<p>{{ offer.value }} off</p>",
        }
    },
}


def offer(**fields: object) -> dict:
    return {**WELCOME, **fields}


def upsert(client, key: str, definition: object, provider: str = "catalogue") -> dict:
    return gql(client, key, UPSERT, d=definition, p=provider)


def error(body: dict) -> str:
    """The one error message of a response; fails on data or an internal error."""
    assert body.get("data") in (None, {}) or all(v is None for v in body["data"].values()), body
    [err] = body["errors"]
    assert err["message"] != "Internal server error", body
    return err["message"]


# --- queries and mutations -----------------------------------------------------------------------


def test_upsert_then_list_offers(client, api_keys):
    full = offer(
        cost=2,
        priority=5,
        levers=1.5,
        tags=["new"],
        valid_from="2026-01-01T00:00:00Z",
        valid_until="2030-01-01T00:00:00+02:00",
        eligibility={"trait": "plan", "op": "=", "value": "free"},
        budget=500,
        propensity="p_welcome",
    )
    body = upsert(client, api_keys["admin"], full)
    saved = body["data"]["upsertOffer"]
    expected = {
        "id": "catalogue:welcome",
        "provider": "catalogue",
        "key": "welcome",
        "name": "Welcome discount",
        "value": 10.0,
        "cost": 2.0,
        "priority": 5.0,
        "levers": 1.5,
        "tags": ["new"],
        "validFrom": "2026-01-01T00:00:00+00:00",
        "validUntil": "2029-12-31T22:00:00+00:00",
        "budget": 500,
        "propensity": "p_welcome",
        "channels": ["email"],
        "eligibility": {"trait": "plan", "op": "=", "value": "free"},
        "definition": full,
    }
    assert saved == expected
    listed = gql(client, api_keys["read"], OFFERS)
    assert listed["data"] == {"offers": [expected]}
    assert count_offers(client, api_keys) == 1


def count_offers(client, api_keys) -> int:
    return len(gql(client, api_keys["read"], OFFERS)["data"]["offers"])


def test_upsert_replaces_by_key_and_the_provider_defaults_to_the_catalogue(
    client, runtime, api_keys
):
    body = gql(client, api_keys["admin"], UPSERT_DEFAULT, d=WELCOME)
    assert body["data"] == {"upsertOffer": {"id": "catalogue:welcome"}}
    upsert(client, api_keys["admin"], offer(name="Welcome back", content={"*": {"t": "x"}}))
    listed = gql(client, api_keys["read"], OFFERS)["data"]["offers"]
    assert [(o["id"], o["name"], o["channels"]) for o in listed] == [
        ("catalogue:welcome", "Welcome back", ["*"])
    ]
    assert count(runtime, Offer) == 1


def test_delete_offer(client, runtime, api_keys):
    upsert(client, api_keys["admin"], WELCOME)
    assert gql(client, api_keys["admin"], DELETE, id="catalogue:welcome")["data"] == {
        "deleteOffer": True
    }
    assert gql(client, api_keys["read"], OFFERS)["data"] == {"offers": []}
    again = gql(client, api_keys["admin"], DELETE, id="catalogue:welcome")
    assert error(again).startswith("id: no saved offer has the id 'catalogue:welcome'")
    assert count(runtime, Offer) == 0


# --- scopes --------------------------------------------------------------------------------------


def test_reading_offers_needs_the_read_scope(client, api_keys):
    anonymous = gql(client, None, OFFERS)
    assert anonymous["_status"] == 401 and "data" not in anonymous
    body = gql(client, api_keys["collect"], OFFERS)
    assert body["data"] is None and body["_status"] == 403
    assert "needs an API key with the 'read' scope" in body["errors"][0]["message"]
    assert gql(client, api_keys["read"], OFFERS)["data"] == {"offers": []}
    assert gql(client, api_keys["admin"], OFFERS)["data"] == {"offers": []}


def test_changing_offers_needs_the_admin_scope(client, runtime, api_keys):
    assert gql(client, None, UPSERT, d=WELCOME, p="catalogue")["_status"] == 401
    assert gql(client, None, DELETE, id="catalogue:welcome")["_status"] == 401
    for key in (api_keys["read"], api_keys["collect"]):
        body = upsert(client, key, WELCOME)
        assert "needs an API key with the 'admin' scope" in body["errors"][0]["message"]
        assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
        body = gql(client, key, DELETE, id="catalogue:welcome")
        assert "needs an API key with the 'admin' scope" in body["errors"][0]["message"]
    assert count(runtime, Offer) == 0
    upsert(client, api_keys["admin"], WELCOME)
    body = gql(client, api_keys["read"], DELETE, id="catalogue:welcome")
    assert body["_status"] == 403
    assert count(runtime, Offer) == 1


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        ("welcome", "definition: expected an object"),
        ([WELCOME], "definition: expected an object"),
        (42, "definition: expected an object"),
        ({}, "definition.key: required"),
        (offer(colour="red"), "definition.colour: unknown key"),
        (offer(key="bad key"), "definition.key: 1 to 128 letters"),
        (offer(value="10"), "definition.value: expected a number, got '10'"),
        (offer(valid_until="next week"),
         "definition.valid_until: expected an ISO-8601 time, got 'next week'"),
        (offer(tags=["a"] * 2), "definition.tags[1]: 'a' is listed twice"),
        (offer(eligibility={"and": [{"trait": "plan", "op": "like", "value": "p%"}]}),
         "definition.eligibility.and[0].op: expected one of"),
        (offer(eligibility={"segment": "vip"}),
         "definition.eligibility.segment: no segment has the key 'vip'"),
        (offer(prerequisites=[{"offer": "welcome"}]),
         "definition.prerequisites[0].offer: an offer cannot be its own prerequisite"),
        (offer(budget=2**40), "definition.budget: expected a whole number"),
        (offer(content={"email": {"subject": "Hi {{ profile.traits.first_name }"}}),
         "definition.content.email.subject: unexpected '}'"),
        (offer(content={"email": {"html": "{{ ''.__class__.__mro__ }}"}}),
         "definition.content.email.html: refused by the template sandbox: templates cannot "
         "read '__class__'"),
        (offer(content={"sms": {"text": "{{ cycler.__init__.__globals__ }}"}}),
         "definition.content.sms.text: refused by the template sandbox: templates cannot read "
         "'__init__'"),
        (offer(content={"sms": {"text": "{% set x = 1 %}"}}),
         "definition.content.sms.text: refused by the template sandbox: {% set %}"),
        (offer(name="a\x00b"), "definition.name: contains a NUL character"),
        (offer(content={"web": {"html": "x" * 300_000}}),
         "definition: longer than 262144 characters in all"),
        (offer(value=10**30), "definition.value: integers are limited to 64 bits"),
        (offer(**{"x" * 10_000: 1}), "definition." + "x" * 64 + "…: unknown key"),
    ],
)  # fmt: skip
def test_bad_definitions_are_refused_naming_the_path(
    client, runtime, api_keys, definition, expected
):
    body = upsert(client, api_keys["admin"], definition)
    assert error(body).startswith(expected), body
    assert body["errors"][0]["path"] == ["upsertOffer"]
    assert count(runtime, Offer) == 0


def test_unknown_providers_are_named_with_the_configured_ones(client, api_keys):
    body = upsert(client, api_keys["admin"], WELCOME, provider="crm")
    assert error(body) == "provider: no content provider is named 'crm' (configured: catalogue)"
    huge = upsert(client, api_keys["admin"], WELCOME, provider="p" * 100_000)
    assert error(huge).startswith("provider: no content provider is named 'ppp")
    assert len(error(huge)) < 200


@pytest.mark.parametrize("bad", ["welcome", "a:b:c", "", ":", "x" * 10_000, "catalogue:a\x00"])
def test_bad_offer_ids_are_refused(client, api_keys, bad):
    message = error(gql(client, api_keys["admin"], DELETE, id=bad))
    assert message.startswith("id: expected an offer id '<provider>:<key>'")
    assert len(message) < 200


def test_unpaired_surrogates_are_refused(client, runtime, api_keys):
    raw = '{"key": "w", "name": "W", "value": 1, "content": {"email": {"subject": "\\ud800"}}}'
    body = json.dumps({"query": UPSERT, "variables": {"p": "catalogue"}})[:-2] + f', "d": {raw}}}}}'
    response = client.post(
        "/graphql",
        content=body,
        headers={
            "Authorization": f"Bearer {api_keys['admin']}",
            "content-type": "application/json",
        },
    )
    assert error(response.json()) == (
        "definition.content.email.subject: contains an unpaired surrogate"
    )
    assert count(runtime, Offer) == 0


def test_deeply_nested_definitions_are_refused(client, runtime, api_keys):
    depth = 40
    condition: dict = {"trait": "plan", "op": "exists"}
    for _ in range(depth):
        condition = {"not": condition}
    body = upsert(client, api_keys["admin"], offer(eligibility=condition))
    assert error(body).startswith("definition.eligibility" + ".not" * 17 + ": conditions nest")
    deep = "[" * 10_000 + "]" * 10_000
    raw = json.dumps({"query": UPSERT, "variables": {"p": "catalogue"}})[:-2]
    response = client.post(
        "/graphql",
        content=raw + f', "d": {{"key": "w", "tags": {deep}}}}}}}',
        headers={
            "Authorization": f"Bearer {api_keys['admin']}",
            "content-type": "application/json",
        },
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["errors"][0]["message"]
    assert count(runtime, Offer) == 0


def test_wrong_argument_types_are_validation_errors(client, api_keys):
    body = gql(
        client, api_keys["admin"], "mutation { upsertOffer(definition: {}, provider: 5) { id } }"
    )
    assert "String cannot represent a non string value" in error(body)
    body = gql(client, api_keys["admin"], "mutation { upsertOffer { id } }")
    assert "upsertOffer(definition:)' of type 'JSON!' is required" in error(body)
    body = gql(client, api_keys["admin"], UPSERT, d=None, p="catalogue")
    assert "Variable '$d' has invalid value" in error(body)
