from __future__ import annotations

from datetime import timedelta

import pytest
from source_helpers import entry

from cdp.config import ComponentEntry, Config, PluginsConfig
from cdp.errors import ConfigError
from cdp.identity.rules import IdentifierType, IdentityConfig
from cdp.plugins import PluginHost
from cdp.sources.spec import find_source, load_sources

HOST = PluginHost(PluginsConfig())
EVENTS = {"identifiers": {"user_id": "uid"}, "event": "Order Completed", "timestamp": "at"}


def load(*entries, identity: IdentityConfig | None = None):
    config = Config(sources=list(entries), identity=identity or IdentityConfig())
    return load_sources(config, HOST)


def error(*entries, identity: IdentityConfig | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*entries, identity=identity)
    return str(info.value)


def test_core_keys_go_to_the_spec_and_the_rest_to_the_connector():
    (source,) = load(entry(path="crm.csv", delimiter=";", schedule="every 2h"))
    assert source.name == "crm"
    assert source.spec.kind == "profiles"
    assert source.spec.mapping.identifiers == {"user_id": "Id", "email": "Email"}
    assert source.spec.interval == timedelta(hours=2)
    assert source.connector.options.path == "crm.csv"
    assert source.connector.options.delimiter == ";"
    assert type(source.connector).name == "csv"


def test_unknown_mapping_key_is_refused_naming_source_and_key():
    mapping = {"identifiers": {"email": "Email"}, "trait": {"first_name": "First"}}
    assert error(entry(path="a.csv", mapping=mapping)) == (
        "cdp.toml: sources[0].mapping.trait: unknown key (source 'crm')"
    )


def test_a_wrong_value_names_the_full_key_and_the_entry_index():
    bad = entry(
        name="shop", path="a.csv", mapping={"identifiers": {"email": "E"}, "traits": {"x": 3}}
    )
    assert error(entry(path="a.csv"), bad) == (
        "cdp.toml: sources[1].mapping.traits.x: Input should be a valid string (source 'shop')"
    )


def test_kind_is_required_and_checked():
    no_kind = ComponentEntry(name="crm", type="csv", path="a.csv", mapping={})
    assert error(no_kind) == "cdp.toml: sources[0].kind: required key is missing (source 'crm')"
    assert error(entry(path="a.csv", kind="people")) == (
        "cdp.toml: sources[0].kind: Input should be 'profiles' or 'events' (source 'crm')"
    )


def test_connector_options_are_validated_by_the_connector():
    assert error(entry(path="a.csv", delimiter=";;")) == (
        "cdp.toml: sources[0].delimiter: String should have at most 1 character (source 'crm')"
    )
    assert error(entry(pth="a.csv")) == "cdp.toml: sources[0].path: Field required (source 'crm')"
    assert error(entry(path="a.csv", pth="x")) == (
        "cdp.toml: sources[0].pth: unknown key (source 'crm')"
    )
    assert error(entry(path="a.csv", has_header=False)) == (
        "cdp.toml: sources[0].columns: Value error, a file without a header row needs "
        "columns = [...] naming its fields (source 'crm')"
    )
    assert error(entry(path="a.csv", encoding="utf-16")) == (
        "cdp.toml: sources[0].encoding: Value error, 'utf-16' is not ASCII-compatible; "
        "convert the file to UTF-8 (source 'crm')"
    )


def test_unknown_type_names_the_installed_ones():
    message = error(entry(type_="xls", path="a.xls"))
    assert message.startswith("cdp.toml: sources[0].type: no source type 'xls' is installed")
    assert "csv" in message and "jsonl" in message and message.endswith("(source 'crm')")


@pytest.mark.parametrize(
    ("kind", "mapping", "expected"),
    [
        ("profiles", {}, "mapping.identifiers: map at least one identifier"),
        (
            "profiles",
            {"identifiers": {"mail": "E"}},
            "mapping.identifiers.mail: unknown identifier",
        ),
        ("profiles", {"identifiers": {"group_id": "G"}}, "mapping.identifiers.group_id: is shared"),
        ("profiles", {"identifiers": {"email": "E"}, "event": "X"}, "mapping.event: only for"),
        (
            "profiles",
            {"identifiers": {"email": "E"}, "properties": {"a": "b"}},
            "mapping.properties",
        ),
        ("events", {"identifiers": {"email": "E"}}, "mapping.event: give either event"),
        (
            "events",
            {"identifiers": {"email": "E"}, "event": "A", "event_field": "B"},
            "mapping.event: give either event",
        ),
    ],
)
def test_mapping_rules(kind, mapping, expected):
    assert error(entry(path="a.csv", kind=kind, mapping=mapping)).startswith(
        f"cdp.toml: sources[0].{expected}"
    )


def test_custom_identifier_types_are_known_from_the_identity_config():
    identity = IdentityConfig(types={"loyalty_id": IdentifierType(priority=2, limit=1)})
    mapping = {"identifiers": {"loyalty_id": "L"}}
    (source,) = load(entry(path="a.csv", mapping=mapping), identity=identity)
    assert source.spec.mapping.identifiers == {"loyalty_id": "L"}


def test_events_spec_and_bad_schedule():
    (source,) = load(entry(type_="jsonl", path="e.jsonl", kind="events", mapping=EVENTS))
    assert source.spec.mapping.event == "Order Completed"
    assert error(entry(path="a.csv", schedule="hourly")).startswith(
        "cdp.toml: sources[0].schedule: 'hourly' is not a schedule"
    )


def test_duplicate_names_and_finding_by_name():
    assert error(entry(path="a.csv"), entry(path="b.csv")) == (
        "cdp.toml: sources[1].name: another source is named 'crm'"
    )
    config = Config(sources=[entry(path="a.csv"), entry(name="shop", path="b.csv")])
    assert find_source(config, HOST, "shop").connector.options.path == "b.csv"
    with pytest.raises(ConfigError, match=r"no source is named 'erp' \(configured: crm, shop\)"):
        find_source(config, HOST, "erp")


def test_the_examples_in_the_docs_are_valid(tmp_path):
    import re
    from pathlib import Path

    from cdp.config import load_config

    text = (Path(__file__).parent.parent / "docs" / "sources.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 5
    names = []
    for number, block in enumerate(blocks):
        file = tmp_path / f"example{number}.toml"
        file.write_text(block, encoding="utf-8")
        environ = {
            "SHOP_WEBHOOK_SECRET": "from-the-environment",
            "CRM_DATABASE_URL": "postgresql+psycopg://reader:pw@db.internal/crm",
        }
        names += [source.name for source in load_sources(load_config(file, environ), HOST)]
    assert names == ["crm", "orders", "shop", "customers", "paid_orders"]
