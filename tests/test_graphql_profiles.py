from __future__ import annotations

from conftest import gql

from cdp.db.models import Identifier, Profile
from cdp.runtime import Runtime

PROFILE = """query($id: ID, $identifier: IdentifierInput) {
  profile(id: $id, identifier: $identifier) { id traits identifiers { type value } }
}"""
PAGE = """query($first: Int!, $after: String) {
  profiles(first: $first, after: $after) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


def add_profile(runtime: Runtime, email: str, merged_into: str | None = None) -> str:
    with runtime.transaction() as session:
        profile = Profile(traits={"email": email}, trait_sources={}, merged_into=merged_into)
        session.add(profile)
        session.flush()
        session.add(Identifier(type="email", value=email, profile_id=profile.id))
        return profile.id


def test_profile_by_id_and_identifier(client, runtime, api_keys):
    pid = add_profile(runtime, "ada@example.com")
    by_id = gql(client, api_keys["read"], PROFILE, id=pid)["data"]["profile"]
    assert by_id == {
        "id": pid,
        "traits": {"email": "ada@example.com"},
        "identifiers": [{"type": "email", "value": "ada@example.com"}],
    }
    by_identifier = gql(
        client, api_keys["read"], PROFILE, identifier={"type": "email", "value": "ada@example.com"}
    )
    assert by_identifier["data"]["profile"]["id"] == pid


def test_unknown_profile_is_null(client, api_keys):
    body = gql(client, api_keys["read"], PROFILE, id="no-such-id")
    assert body["data"] == {"profile": None}
    assert "errors" not in body


def test_merged_id_resolves_to_survivor(client, runtime, api_keys):
    survivor = add_profile(runtime, "s@example.com")
    merged = add_profile(runtime, "m@example.com", merged_into=survivor)
    assert gql(client, api_keys["read"], PROFILE, id=merged)["data"]["profile"]["id"] == survivor


def test_profile_needs_exactly_one_lookup(client, api_keys):
    body = gql(client, api_keys["read"], "{ profile { id } }")
    assert body["errors"][0]["message"] == "profile: give exactly one of id and identifier"


def test_pages_cover_every_live_profile_once(client, runtime, api_keys):
    ids = [add_profile(runtime, f"p{i}@example.com") for i in range(7)]
    add_profile(runtime, "gone@example.com", merged_into=ids[0])
    seen, after, pages = [], None, 0
    while True:
        page = gql(client, api_keys["read"], PAGE, first=3, after=after)["data"]["profiles"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ids  # creation order, merged-away profile excluded
    assert pages == 3


def test_bad_cursor_and_page_size_are_named(client, api_keys):
    bad_cursor = gql(client, api_keys["read"], PAGE, first=3, after="bm9wZQ==")
    assert bad_cursor["errors"][0]["message"] == "after: not a cursor returned by this API"
    too_many = gql(client, api_keys["read"], PAGE, first=1000)
    assert too_many["errors"][0]["message"] == "first: must be between 1 and 100 (got 1000)"
    assert gql(client, api_keys["read"], PAGE, first=0)["errors"][0]["message"].startswith("first:")
