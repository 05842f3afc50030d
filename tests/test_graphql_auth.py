"""Every field is behind an API-key scope; requests without a valid key get 401, not data."""

from __future__ import annotations

import pytest
from conftest import gql

from cdp.graphql.permissions import _NeedsScope
from cdp.graphql.schema import schema
from cdp.keys import revoke_key

QUERY = "{ profiles(first: 1) { edges { cursor } } }"


def test_missing_key_is_401(client):
    body = gql(client, None, QUERY)
    assert body["_status"] == 401
    assert body["errors"][0]["message"] == (
        "missing API key: send the header `Authorization: Bearer <key>`"
    )
    assert "data" not in body


@pytest.mark.parametrize(
    "header",
    [
        "Bearer cdp_not-a-real-key",
        "Basic Y2RwXzp4",
        "Bearer ",
        "cdp_raw-key-without-scheme",
        "Bearer " + "x" * 5000,
    ],
)
def test_wrong_or_malformed_key_is_401(client, header):
    response = client.post("/graphql", json={"query": QUERY}, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="cdp"'
    assert "data" not in response.json()


def test_revoked_key_is_401(client, runtime, api_keys):
    assert gql(client, api_keys["read"], QUERY)["_status"] == 200
    with runtime.transaction() as session:
        revoke_key(session, api_keys["read"][:12])
    body = gql(client, api_keys["read"], QUERY)
    assert body["_status"] == 401
    assert body["errors"][0]["message"] == "invalid, revoked or malformed API key"


def test_collect_key_cannot_read_profiles(client, api_keys):
    body = gql(client, api_keys["collect"], QUERY)
    assert body["_status"] == 403
    assert body["data"] is None
    assert body["errors"][0]["message"] == "this field needs an API key with the 'read' scope"
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}


def test_read_key_cannot_list_plugins_but_admin_can(client, api_keys):
    assert gql(client, api_keys["read"], "{ plugins { name } }")["_status"] == 403
    body = gql(client, api_keys["admin"], "{ plugins { name enabled components { kind name } } }")
    assert {"name": "log", "enabled": True, "components": [{"kind": "channel", "name": "log"}]} in (
        body["data"]["plugins"]
    )


def test_admin_key_can_read(client, api_keys):
    assert gql(client, api_keys["admin"], QUERY)["_status"] == 200


def test_every_root_field_declares_a_scope():
    checked = 0
    for root in ("Query", "Mutation", "Subscription"):
        definition = schema.get_type_by_name(root)
        for field in definition.fields if definition else []:
            scopes = [p for p in field.permission_classes if issubclass(p, _NeedsScope)]
            assert scopes, f"{root}.{field.python_name} has no scope permission"
            checked += 1
    assert checked == len(schema._schema.query_type.fields) + len(
        schema._schema.mutation_type.fields if schema._schema.mutation_type else {}
    ) + len(schema._schema.subscription_type.fields if schema._schema.subscription_type else {})
