"""Hostile queries are refused by validation, and the limits do not defeat the validation cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import gql, make_config
from starlette.testclient import TestClient

from cdp.app import create_app
from cdp.config import GraphQLConfig
from cdp.keys import Scope, create_key
from cdp.runtime import Runtime

DEPTH_5 = "{ profiles(first: 1) { edges { node { identifiers { type } } } } }"
DEPTH_3 = "{ profiles(first: 1) { edges { cursor } } }"


@pytest.fixture
def strict(database_url: str) -> Iterator[tuple[TestClient, str]]:
    limits = GraphQLConfig(max_depth=3, max_aliases=2, max_tokens=60)
    runtime = Runtime.start(make_config(database_url, graphql=limits))
    with runtime.transaction() as session:
        key = create_key(session, frozenset({Scope.READ}), "t")[1]
    with TestClient(create_app(runtime)) as client:
        yield client, key
    runtime.close()


def test_deep_query_is_refused(strict):
    client, key = strict
    body = gql(client, key, DEPTH_5)
    assert body["errors"][0]["message"] == "'anonymous' exceeds maximum operation depth of 3"
    assert body.get("data") is None
    assert "errors" not in gql(client, key, DEPTH_3)


def test_deep_hostile_nesting_is_refused_at_the_default_limit(client, api_keys):
    query = "{ " + "profiles(first: 1) { edges { node { " * 8 + "id" + " } } }" * 8 + " }"
    body = gql(client, api_keys["read"], query)
    messages = [e["message"] for e in body["errors"]]
    assert "'anonymous' exceeds maximum operation depth of 12" in messages


def test_too_many_aliases_are_refused(strict):
    client, key = strict
    body = gql(
        client,
        key,
        "{ a: profiles { edges { cursor } } b: profiles { edges { cursor } } "
        "c: profiles { edges { cursor } } }",
    )
    assert body["errors"][0]["message"] == "3 aliases found. Allowed: 2"
    assert "errors" not in gql(client, key, "{ a: profiles { edges { cursor } } }")


def test_too_many_tokens_are_refused(strict, client, api_keys):
    strict_client, key = strict
    body = gql(strict_client, key, '{ profile(id: "x") { ' + "id " * 60 + "} }")
    assert body["errors"][0]["message"] == (
        "Syntax Error: Document contains more than 60 tokens. Parsing aborted."
    )
    body = gql(client, api_keys["read"], '{ profile(id: "x") { ' + "id " * 5000 + "} }")
    assert "more than 4000 tokens" in body["errors"][0]["message"]


def test_validation_cache_is_hit_for_a_repeated_query(client, api_keys):
    from strawberry.extensions.validation_cache import _get_validate_cache

    from cdp.graphql.schema import CACHE_SIZE

    cache = _get_validate_cache(CACHE_SIZE)
    query = "{ profiles(first: 2) { edges { cursor } } }"
    assert "errors" not in gql(client, api_keys["read"], query)
    before = cache.cache_info()
    for _ in range(3):
        assert "errors" not in gql(client, api_keys["read"], query)
    after = cache.cache_info()
    assert after.hits - before.hits == 3
    assert after.misses == before.misses
