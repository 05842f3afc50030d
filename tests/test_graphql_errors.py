"""Internal errors are masked (and logged in full); client errors stay readable; introspection
and GraphiQL exist only in development mode."""

from __future__ import annotations

import logging

from conftest import gql, make_config
from starlette.testclient import TestClient

from cdp import profiles
from cdp.app import create_app
from cdp.keys import Scope, create_key
from cdp.runtime import Runtime

INTROSPECT = "{ __schema { queryType { name } } }"


def test_internal_error_is_masked_and_logged(client, api_keys, monkeypatch, caplog):
    def explode(session, profile_id):
        raise RuntimeError("connection string postgres://admin:hunter2@db leaked")

    monkeypatch.setattr(profiles, "get_profile", explode)
    with caplog.at_level(logging.ERROR, logger="cdp.graphql"):
        body = gql(client, api_keys["read"], '{ profile(id: "p1") { id } }')
    assert body["errors"] == [
        {
            "message": "Internal server error",
            "locations": [{"line": 1, "column": 3}],
            "path": ["profile"],
        }
    ]
    assert "hunter2" not in str(body)
    assert "hunter2" in caplog.text  # the operator still sees what happened


def test_validation_errors_stay_readable(client, api_keys):
    body = gql(client, api_keys["read"], "{ profiles { edgez } }")
    assert body["errors"][0]["message"] == (
        "Cannot query field 'edgez' on type 'ProfileConnection'. Did you mean 'edges'?"
    )


def test_syntax_error_is_readable(client, api_keys):
    body = gql(client, api_keys["read"], "{ profiles { ")
    assert body["errors"][0]["message"].startswith("Syntax Error:")


def test_malformed_request_bodies_are_refused(client, api_keys):
    headers = {"Authorization": f"Bearer {api_keys['read']}", "content-type": "application/json"}
    for raw in [
        b"not json",
        b"[1, 2]",
        b'{"query": 42}',
        b"{}",
        b'{"query": "{ x }", "variables": 3}',
    ]:
        response = client.post("/graphql", content=raw, headers=headers)
        assert 400 <= response.status_code < 500, raw


def test_introspection_is_off_in_production(client, api_keys):
    body = gql(client, api_keys["read"], INTROSPECT)
    assert "introspection" in body["errors"][0]["message"].lower()
    assert client.get("/graphql", headers={"accept": "text/html"}).status_code != 200


def test_introspection_and_graphiql_in_development(database_url):
    runtime = Runtime.start(make_config(database_url, mode="development"))
    try:
        with runtime.transaction() as session:
            key = create_key(session, frozenset({Scope.READ}), "t")[1]
        with TestClient(create_app(runtime)) as client:
            body = gql(client, key, INTROSPECT)
            assert body["data"] == {"__schema": {"queryType": {"name": "Query"}}}
            page = client.get("/graphql", headers={"accept": "text/html"})
            assert page.status_code == 200
            assert "graphiql" in page.text.lower()
            assert gql(client, None, INTROSPECT)["_status"] == 401  # queries still need a key
    finally:
        runtime.close()
