"""GraphQL: nextBestOffers, decision(id), recordResponse and decideChannel, with scopes and bad
input; a response through GraphQL changes the next decision."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import gql, make_config
from identity_helpers import msg, owner, send
from servers import refused_start

from cdp.config import ChannelPolicyConfig, DecisionsConfig, SuppressionConfig
from cdp.decisions import catalogue
from cdp.runtime import Runtime

NOW = datetime.now(UTC)
NBO = """
query($id: ID!, $context: DecisionContextInput!) {
  profile(id: $id) {
    nextBestOffers(context: $context) {
      id holdout strategy strategyVersion
      offers { offerId name rank score probability factors content }
      filtered { offerId rule detail }
    }
  }
}"""
RESPOND = """
mutation($d: String!, $o: String!, $outcome: Outcome!) {
  recordResponse(decisionId: $d, offerId: $o, outcome: $outcome) { id outcome decisionId }
}"""


@pytest.fixture
def config(database_url):
    return make_config(
        database_url,
        decisions=DecisionsConfig(
            default_strategy="rules",
            suppression=SuppressionConfig(negatives=1, within="1d"),
            consent={"email": "marketing"},
            channels={
                "email": ChannelPolicyConfig(cost=0.01, reach="email"),
                "sms": ChannelPolicyConfig(cost=0.05, reach="phone"),
            },
        ),
    )


def setup(runtime: Runtime) -> str:
    send(
        runtime,
        msg(
            "identify",
            NOW,
            userId="ada",
            traits={"first_name": "Ada", "email": "ada@example.com"},
            context={"consent": {"categoryPreferences": {"marketing": True}}},
        ),
    )
    for key, priority in (("gold", 5), ("silver", 1)):
        catalogue.upsert_offer(
            runtime,
            "catalogue",
            {
                "key": key,
                "name": key.title(),
                "value": 20,
                "priority": priority,
                "content": {
                    "web": {"title": f"{key} for {{{{ profile.traits.first_name }}}}"},
                    "email": {"subject": "Hi", "text": "Hello"},
                    "sms": {"text": "Hi"},
                },
            },
        )
    found = owner(runtime, "user_id", "ada")
    assert found is not None
    return found


def test_next_best_offers_then_a_response_changes_the_next_decision(client, runtime, api_keys):
    pid = setup(runtime)
    context = {"channel": "web", "placement": "home", "limit": 1}
    body = gql(client, api_keys["read"], NBO, id=pid, context=context)
    decision = body["data"]["profile"]["nextBestOffers"]
    assert decision["strategy"] == "rules" and not decision["holdout"]
    assert [(o["offerId"], o["rank"]) for o in decision["offers"]] == [("catalogue:gold", 1)]
    assert decision["offers"][0]["content"] == {"title": "gold for Ada"}
    assert decision["offers"][0]["factors"]["priority"] == 5

    denied = gql(
        client, api_keys["read"], RESPOND, d=decision["id"], o="catalogue:gold", outcome="DISMISS"
    )
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = gql(
        client,
        api_keys["collect"],
        RESPOND,
        d=decision["id"],
        o="catalogue:gold",
        outcome="DISMISS",
    )
    assert body["data"]["recordResponse"]["outcome"] == "DISMISS"

    after = gql(client, api_keys["read"], NBO, id=pid, context=context)
    next_decision = after["data"]["profile"]["nextBestOffers"]
    assert [o["offerId"] for o in next_decision["offers"]] == ["catalogue:silver"]
    assert {"offerId": "catalogue:gold", "rule": "suppression"}.items() <= next_decision[
        "filtered"
    ][0].items()

    logged = gql(
        client,
        api_keys["read"],
        "query($id: ID!) { decision(id: $id) { id offers { offerId score } filtered { rule } } }",
        id=decision["id"],
    )["data"]["decision"]
    assert logged["offers"] == [{"offerId": "catalogue:gold", "score": 5.0}]


def test_bad_input_gets_errors_that_name_it(client, runtime, api_keys):
    pid = setup(runtime)
    cases = [
        ({"channel": "web", "limit": 0}, "context.limit"),
        ({"channel": "", "limit": 1}, "context.channel"),
        ({"channel": "web", "placement": "x" * 500}, "context.placement"),
    ]
    for context, expected in cases:
        body = gql(client, api_keys["read"], NBO, id=pid, context=context)
        assert expected in body["errors"][0]["message"]
    body = gql(client, api_keys["collect"], RESPOND, d="nope", o="x", outcome="CLICK")
    assert "decisionId: no decision" in body["errors"][0]["message"]
    body = gql(client, api_keys["collect"], RESPOND, d="nope", o="x", outcome="LOVED")
    assert body["errors"] and "Internal" not in body["errors"][0]["message"]
    assert gql(client, None, NBO, id=pid, context={"channel": "web"})["_status"] == 401


def test_decide_channel_weighs_consent_reach_and_cost(client, runtime, api_keys):
    pid = setup(runtime)
    query = """query($p: ID!, $o: String!) { decideChannel(profileId: $p, offerId: $o) {
      channel options } }"""
    body = gql(client, api_keys["read"], query, p=pid, o="catalogue:gold")
    choice = body["data"]["decideChannel"]
    assert choice["channel"] == "email"
    sms = next(o for o in choice["options"] if o["channel"] == "sms")
    assert sms["excluded"] == "no phone identifier"
    missing = gql(client, api_keys["read"], query, p=pid, o="catalogue:nope")
    assert "offerId: no offer" in missing["errors"][0]["message"]


def test_server_refuses_to_start_with_a_bad_content_provider(database_url, tmp_path):
    config = tmp_path / "cdp.toml"
    config.write_text(
        '[[content_providers]]\nname = "catalogue"\ntype = "catalogue"\n'
        'offers = [{ key = "a", name = "A", value = "lots", content = { web = { t = "x" } } }]\n'
    )
    result = refused_start(config, database_url)
    assert result.returncode == 2
    assert f"{config}: content_providers[0].offers[0].value" in result.stderr
