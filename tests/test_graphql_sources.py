"""GraphQL `sources` and `syncSource`, and the server refusing a bad `[[sources]]` at start."""

from __future__ import annotations

import time

from conftest import gql
from servers import refused_start
from source_helpers import entry, events, started
from starlette.testclient import TestClient

from cdp.app import create_app
from cdp.keys import Scope, create_key
from cdp.sources.claim import claim_source, release

SOURCES = "{ sources { name type kind status rowsImported rowsRejected lastError checkpoint } }"
SYNC = "mutation($n: String!) { syncSource(name: $n) { name status } }"


def crm_file(tmp_path, rows: int) -> str:
    path = tmp_path / "crm.csv"
    lines = ["Id,Email,First,Newsletter"] + [
        f"{i},user{i}@example.com,First {i},yes" for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def admin_client(runtime):
    with runtime.transaction() as session:
        admin = create_key(session, frozenset({Scope.ADMIN}), "ops")[1]
        reader = create_key(session, frozenset({Scope.READ}), "web")[1]
    return TestClient(create_app(runtime)), admin, reader


def test_sources_lists_configured_sources_and_sync_runs_in_the_background(database_url, tmp_path):
    with started(database_url, entry(path=crm_file(tmp_path, 300))) as runtime:
        client, admin, reader = admin_client(runtime)
        with client:
            before = gql(client, admin, SOURCES)["data"]["sources"]
            assert before == [
                {
                    "name": "crm",
                    "type": "csv",
                    "kind": "profiles",
                    "status": "never run",
                    "rowsImported": 0,
                    "rowsRejected": 0,
                    "lastError": None,
                    "checkpoint": None,
                }
            ]
            started_sync = gql(client, admin, SYNC, n="crm")["data"]["syncSource"]
            assert started_sync["name"] == "crm"
            assert started_sync["status"] in ("running", "completed")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                after = gql(client, admin, SOURCES)["data"]["sources"][0]
                if after["status"] != "running":
                    break
                time.sleep(0.05)
            assert after["status"] == "completed"
            assert after["rowsImported"] == 300
            assert after["checkpoint"] is not None
            assert len(events(runtime)) == 300
            assert gql(client, reader, SOURCES)["_status"] == 403
            assert gql(client, reader, SYNC, n="crm")["_status"] == 403


def test_sync_of_a_busy_or_unknown_source_is_refused_by_name(database_url, tmp_path):
    with started(database_url, entry(path=crm_file(tmp_path, 5))) as runtime:
        client, admin, _ = admin_client(runtime)
        claim = claim_source(runtime, "crm")  # another sync holds it
        try:
            with client:
                busy = gql(client, admin, SYNC, n="crm")
                assert busy["errors"][0]["message"].startswith(
                    "name: source 'crm' is being synced by "
                )
                unknown = gql(client, admin, SYNC, n="erp")
                assert unknown["errors"][0]["message"] == (
                    "name: cdp.toml: no source is named 'erp' (configured: crm)"
                )
        finally:
            release(runtime, claim, None)
        assert events(runtime) == []


def test_server_refuses_to_start_with_a_bad_source(database_url, tmp_path):
    config = tmp_path / "cdp.toml"
    config.write_text(
        '[[sources]]\nname = "crm"\ntype = "csv"\nkind = "people"\n'
        'path = "x.csv"\n[sources.mapping]\nidentifiers = { email = "Email" }\n'
    )
    result = refused_start(config, database_url)
    assert result.returncode == 2
    assert f"{config}: sources[0].kind:" in result.stderr
