"""The GraphQL surface of models: `models`, `model`, `trainModel`, `rollbackModel`, and
`Profile.scores` scored on demand; scopes and malformed input."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import gql
from model_helpers import start
from starlette.testclient import TestClient

from cdp.app import create_app
from cdp.keys import Scope, create_key
from cdp.models import synthetic
from cdp.runtime import Runtime

MODELS = """{ models { name type task schedule activeVersion scoredAt
  outputs { name kind description }
  versions { version active trainedAt metrics features cutoff featureStart labelEnd codeVersion
             artefactFormat artefactSha256 report } } }"""
TRAIN = """mutation($n: String!) { trainModel(name: $n) {
  model version active type task metrics features report cutoff labelEnd } }"""
ROLLBACK = """mutation($n: String!, $v: Int!) { rollbackModel(name: $n, version: $v) {
  name activeVersion versions { version active } } }"""
PROFILE = """query($id: ID!) { profile(id: $id) { scores { name value label modelVersion
  scoredAt } } }"""


@pytest.fixture
def served(database_url, engine) -> Iterator[tuple[TestClient, Runtime, dict, list[str]]]:
    world = synthetic.generate(engine, 200, seed=5)  # ending now: trainModel trains as of now
    runtime = start(database_url, "churn", "persona")
    keys = {}
    with runtime.transaction() as session:
        for scope in Scope:
            keys[scope.value] = create_key(session, frozenset({scope}), f"test {scope}")[1]
    with TestClient(create_app(runtime)) as client:
        yield client, runtime, keys, world.profile_ids
    runtime.close()


def message(body: dict) -> str:
    [err] = body["errors"]
    assert err["message"] != "Internal server error"
    return err["message"]


def test_train_list_rollback_and_profile_scores(served):
    client, _, keys, profile_ids = served
    body = gql(client, keys["read"], MODELS)
    assert [m["name"] for m in body["data"]["models"]] == ["churn", "persona"]
    churn = body["data"]["models"][0]
    assert churn["type"] == "churn" and churn["task"] == "classification"
    assert churn["outputs"] == [
        {"name": "churn", "kind": "score", "description": "P(no activity in 30d)"}
    ]
    assert churn["versions"] == [] and churn["activeVersion"] is None

    for expected in (1, 2):
        trained = gql(client, keys["admin"], TRAIN, n="churn")["data"]["trainModel"]
        assert trained["version"] == expected and trained["active"] is True
    assert trained["metrics"]["auc"] > 0.5 and trained["metrics"]["test_size"] > 0
    assert "held out: AUC" in trained["report"]
    assert trained["features"][0] == "events_7d"

    rolled = gql(client, keys["admin"], ROLLBACK, n="churn", v=1)["data"]["rollbackModel"]
    assert rolled["activeVersion"] == 1
    assert rolled["versions"] == [{"version": 1, "active": True}, {"version": 2, "active": False}]
    listed = gql(client, keys["read"], MODELS)["data"]["models"][0]
    assert listed["versions"][0]["artefactFormat"] == "skops"
    assert len(listed["versions"][0]["artefactSha256"]) == 64

    # Never scored in bulk: reading the profile scores it on demand, with the active version.
    scores = gql(client, keys["read"], PROFILE, id=profile_ids[0])["data"]["profile"]["scores"]
    assert [(s["name"], s["modelVersion"]) for s in scores] == [("churn", "churn@1")]
    assert 0 <= scores[0]["value"] <= 1 and scores[0]["label"] is None
    one = gql(client, keys["read"], '{ model(name: "churn") { activeVersion } }')
    assert one["data"]["model"] == {"activeVersion": 1}
    assert gql(client, keys["read"], '{ model(name: "nope") { name } }')["data"]["model"] is None


def test_every_field_needs_its_scope(served):
    client, _, keys, _ = served
    assert gql(client, None, MODELS)["_status"] == 401
    assert gql(client, keys["collect"], MODELS)["_status"] == 403
    for key in ("read", "collect"):
        body = gql(client, keys[key], TRAIN, n="churn")
        assert body["_status"] == 403
        assert "needs an API key with the 'admin' scope" in message(body)
        assert gql(client, keys[key], ROLLBACK, n="churn", v=1)["_status"] == 403


def test_unknown_names_bad_versions_and_too_little_data_are_client_errors(served):
    client, _, keys, _ = served
    admin = keys["admin"]
    assert "no model is named 'nope' (configured: churn, persona)" in message(
        gql(client, admin, TRAIN, n="nope")
    )
    assert "model 'churn' has no version 3 (versions: none yet)" in message(
        gql(client, admin, ROLLBACK, n="churn", v=3)
    )
    assert message(gql(client, admin, ROLLBACK, n="churn", v=0)) == (
        "version: versions are numbered from 1"
    )
    assert "Int cannot represent non-integer value" in message(
        gql(client, admin, 'mutation { rollbackModel(name: "churn", version: "x") { name } }')
    )
    assert "of type 'String!' is required" in message(
        gql(client, admin, "mutation { trainModel { version } }")
    )


def test_too_little_data_is_explained(database_url):
    runtime = start(database_url, "churn")
    with runtime.transaction() as session:
        admin = create_key(session, frozenset({Scope.ADMIN}), "admin")[1]
    try:
        with TestClient(create_app(runtime)) as client:
            text = message(gql(client, admin, TRAIN, n="churn"))
    finally:
        runtime.close()
    assert "too little data to train: 0 profiles had events" in text
    assert "at least 50 are needed" in text
