"""The GraphQL surface of collection and identity: track/identify, the timeline, merge history,
and an admin's merges and splits."""

from __future__ import annotations

from datetime import timedelta

from conftest import gql
from identity_helpers import T0, identifiers, live_profiles, msg, owner, send
from sqlalchemy import select

from cdp.db.models import Event, IdentityEdge

TRACK = (
    """mutation($input: TrackInput!) { track(input: $input) { messageId duplicate profileId } }"""
)
IDENTIFY = """mutation($input: IdentifyInput!) {
  identify(input: $input) { messageId duplicate profileId } }"""
PROFILE = """query($id: ID!) { profile(id: $id) {
  id traits traitSources consents { purpose channel status source }
  mergeHistory { kind survivorId mergedId reason actor eventId }
} }"""
TIMELINE = """query($id: ID!, $first: Int!, $after: String, $type: String, $name: String) {
  profile(id: $id) { events(first: $first, after: $after, type: $type, name: $name) {
    edges { node { type name messageId properties } } pageInfo { hasNextPage endCursor } } } }"""


def test_track_and_identify_mutations_use_the_pipeline(client, api_keys):
    body = gql(
        client,
        api_keys["collect"],
        IDENTIFY,
        input={"userId": "u1", "traits": {"email": "Ada@Example.com"}, "messageId": "g-1"},
    )
    result = body["data"]["identify"]
    assert result["messageId"] == "g-1" and result["duplicate"] is False
    track = gql(
        client,
        api_keys["collect"],
        TRACK,
        input={"event": "Order Completed", "userId": "u1", "properties": {"total": 42}},
    )
    assert track["data"]["track"]["profileId"] == result["profileId"]
    again = gql(client, api_keys["collect"], IDENTIFY, input={"userId": "u1", "messageId": "g-1"})
    assert again["data"]["identify"] == {"messageId": "g-1", "duplicate": True, "profileId": None}


def test_mutation_validation_errors_name_the_field(client, api_keys):
    body = gql(client, api_keys["collect"], TRACK, input={"event": "x"})
    assert body["errors"][0]["message"] == "userId: either userId or anonymousId is required"
    body = gql(client, api_keys["collect"], TRACK, input={"event": "", "userId": "u"})
    assert body["errors"][0]["message"].startswith("event:")


def test_collect_key_cannot_merge_and_read_key_cannot_track(client, api_keys):
    assert (
        gql(client, api_keys["read"], TRACK, input={"event": "x", "userId": "u"})["_status"] == 403
    )
    merge = 'mutation { mergeProfiles(survivorId: "a", mergedIds: ["b"], reason: "r") { id } }'
    assert gql(client, api_keys["collect"], merge)["_status"] == 403


def test_profile_by_identifier_normalises_the_value(client, runtime, api_keys):
    send(runtime, msg("identify", userId="u1", traits={"email": "ada@example.com"}))
    query = 'query($v: String!) { profile(identifier: {type: "email", value: $v}) { id } }'
    body = gql(client, api_keys["read"], query, v="  ADA@example.com ")
    assert body["data"]["profile"]["id"] == owner(runtime, "user_id", "u1")
    bad = gql(client, api_keys["read"], query, v="not an email")
    assert bad["errors"][0]["message"].startswith("identifier.value:")
    unknown = gql(
        client, api_keys["read"], '{ profile(identifier: {type: "shoe_size", value: "9"}) { id } }'
    )
    assert unknown["errors"][0]["message"].startswith("identifier.type: unknown type 'shoe_size'")


def test_timeline_is_newest_first_paginated_and_filtered(client, runtime, api_keys):
    for i in range(5):
        send(
            runtime,
            msg(
                "track",
                at=T0 + timedelta(minutes=i),
                userId="u1",
                event=f"E{i % 2}",
                properties={"i": i},
            ),
        )
    send(runtime, msg("page", at=T0 + timedelta(minutes=9), userId="u1", name="Home"))
    pid = owner(runtime, "user_id", "u1")
    first = gql(client, api_keys["read"], TIMELINE, id=pid, first=4)["data"]["profile"]["events"]
    assert [e["node"]["properties"].get("i") for e in first["edges"]] == [None, 4, 3, 2]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = gql(
        client, api_keys["read"], TIMELINE, id=pid, first=4, after=first["pageInfo"]["endCursor"]
    )["data"]["profile"]["events"]
    assert [e["node"]["properties"]["i"] for e in rest["edges"]] == [1, 0]
    assert rest["pageInfo"]["hasNextPage"] is False
    e1 = gql(client, api_keys["read"], TIMELINE, id=pid, first=10, type="track", name="E1")
    assert [e["node"]["properties"]["i"] for e in e1["data"]["profile"]["events"]["edges"]] == [
        3,
        1,
    ]


def test_timelines_of_many_profiles_take_one_query(client, runtime, api_keys):
    from sqlalchemy import event as sa_event

    for user in range(6):
        send(runtime, *[msg("track", userId=f"u{user}", event=f"e{i}") for i in range(3)])
    statements = []

    def count(conn, cursor, statement, *args):
        if "FROM events" in statement:
            statements.append(statement)

    sa_event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        body = gql(
            client,
            api_keys["read"],
            "{ profiles(first: 10) { edges { node { "
            "events(first: 2) { edges { node { name } } } } } } }",
        )
    finally:
        sa_event.remove(runtime.engine, "before_cursor_execute", count)
    pages = [e["node"]["events"]["edges"] for e in body["data"]["profiles"]["edges"]]
    assert [[n["node"]["name"] for n in page] for page in pages] == [["e2", "e1"]] * 6
    assert len(statements) == 1


def test_merge_history_explains_the_profile(client, runtime, api_keys):
    send(runtime, msg("identify", at=T0, userId="u1"))
    send(runtime, msg("page", at=T0 + timedelta(hours=1), anonymousId="a1"))
    send(
        runtime,
        msg(
            "identify",
            at=T0 + timedelta(hours=2),
            userId="u1",
            anonymousId="a1",
            messageId="link-1",
        ),
    )
    pid = owner(runtime, "user_id", "u1")
    history = gql(client, api_keys["read"], PROFILE, id=pid)["data"]["profile"]["mergeHistory"]
    [record] = history
    assert record["kind"] == "merge" and record["survivorId"] == pid
    assert record["reason"] == "identify event link-1 from web linked user_id=u1, anonymous_id=a1"
    assert record["actor"] == "source:web" and record["eventId"] is not None


def test_admin_merge_then_split_gives_everything_back(client, runtime, api_keys):
    consent = {"consent": {"categoryPreferences": {"marketing": True}}}
    send(runtime, msg("identify", at=T0, userId="ada", traits={"name": "Ada", "city": "Oslo"}))
    send(
        runtime,
        msg(
            "identify",
            at=T0 + timedelta(hours=1),
            userId="bob",
            traits={"name": "Bob"},
            context=consent,
        ),
    )
    send(runtime, msg("track", at=T0 + timedelta(hours=2), userId="bob", event="Bob's order"))
    ada, bob = owner(runtime, "user_id", "ada"), owner(runtime, "user_id", "bob")
    # user_id's limit of 1 would refuse this merge by events; an admin's merge is explicit.
    merged = gql(
        client,
        api_keys["admin"],
        """mutation($s: ID!, $m: [ID!]!) {
      mergeProfiles(survivorId: $s, mergedIds: $m, reason: "same person per support ticket 7")
      { id traits } }""",
        s=ada,
        m=[bob],
    )
    assert merged["data"]["mergeProfiles"] == {"id": ada, "traits": {"name": "Bob", "city": "Oslo"}}
    assert len(live_profiles(runtime)) == 1
    with runtime.sessions() as session:
        manual = session.scalars(select(IdentityEdge).where(IdentityEdge.source == "manual")).all()
    assert len(manual) == 1 and manual[0].rule == "key:test admin"

    split = gql(
        client,
        api_keys["admin"],
        """mutation($p: ID!) {
      splitProfile(profileId: $p, identifiers: [{type: "user_id", value: "bob"}],
                   reason: "ticket 7 was wrong") { id traits consents { purpose status } } }""",
        p=ada,
    )
    first, second = split["data"]["splitProfile"]
    assert first == {"id": ada, "traits": {"name": "Ada", "city": "Oslo"}, "consents": []}
    assert second["traits"] == {"name": "Bob"}
    assert second["consents"] == [{"purpose": "marketing", "status": "granted"}]
    assert identifiers(runtime, second["id"]) == {("user_id", "bob")}
    with runtime.sessions() as session:
        events = {e.name or e.type: e.profile_id for e in session.scalars(select(Event))}
    assert events["Bob's order"] == second["id"]
    history = gql(client, api_keys["read"], PROFILE, id=ada)["data"]["profile"]["mergeHistory"]
    assert [h["kind"] for h in history] == ["merge", "split"]


def test_split_refuses_what_it_cannot_do(client, runtime, api_keys):
    send(runtime, msg("identify", userId="u1", anonymousId="a1", traits={"email": "e@x.io"}))
    pid = owner(runtime, "user_id", "u1")
    split = """mutation($p: ID!, $t: String!, $v: String!) {
      splitProfile(profileId: $p, identifiers: [{type: $t, value: $v}], reason: "r") { id } }"""
    not_there = gql(client, api_keys["admin"], split, p=pid, t="email", v="other@x.io")
    assert not_there["errors"][0]["message"] == (
        "identifiers: email='other@x.io' is not an identifier of this profile"
    )
    missing = gql(client, api_keys["admin"], split, p="nope", t="user_id", v="u1")
    assert missing["errors"][0]["message"] == "profileId: no profile 'nope'"
