"""Offers: parsing and validation (`parse_offer`), the bundled `catalogue` content provider, and
the offer service (providers, upsert, delete, the cache, rendering) on every backend."""

from __future__ import annotations

import logging
import threading
import time
import types
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config
from identity_helpers import count, msg, owner, send
from sqlalchemy import delete, select

from cdp.components import ContentProvider
from cdp.config import ComponentEntry, PluginsConfig, load_config
from cdp.db.models import Offer, Segment, utcnow
from cdp.decisions import catalogue
from cdp.decisions.catalogue import OfferCache, load_providers, providers
from cdp.decisions.offers import STRUCTURAL, OfferError, parse_offer
from cdp.errors import ConfigError, NotFoundError, UserError
from cdp.hookspecs import hookimpl
from cdp.plugins import PluginHost
from cdp.runtime import Runtime
from cdp.segments import service
from cdp.segments.conditions import And, Catalog, Field, Predicate, SegmentRef

CATALOG = Catalog(
    lambda name: {"age": "number", "plan": "string"}.get(name),
    {"orders_30d": "number"},
    lambda key: key == "vip",
)
WELCOME = {
    "key": "welcome",
    "name": "Welcome discount",
    "value": 10,
    "content": {"email": {"subject": "Hi {{ profile.traits.first_name | default('there') }}"}},
}


def offer(**fields: Any) -> dict[str, Any]:
    return {**WELCOME, **fields}


def parse_error(raw: Any, catalog: Catalog = CATALOG) -> str:
    with pytest.raises(UserError) as caught:
        parse_offer("catalogue", raw, catalog)
    return str(caught.value)


# --- parse_offer ---------------------------------------------------------------------------------


def test_a_full_definition_parses_into_a_spec():
    raw = {
        "key": "gold.upgrade-2",
        "name": "Gold upgrade",
        "value": 120,
        "cost": 4.5,
        "priority": 7,
        "levers": 1.5,
        "tags": ["upsell", "gold"],
        "valid_from": "2026-01-01T00:00:00+01:00",
        "valid_until": "2026-12-31",
        "eligibility": {"and": [{"trait": "age", "op": ">=", "value": 18}, {"segment": "vip"}]},
        "prerequisites": [
            {"offer": "welcome", "outcome": "shown"},
            {"offer": "crm:intro"},
        ],
        "budget": 1000,
        "propensity": "p_gold",
        "content": {
            "email": {"subject": "Gold for {{ profile.traits.first_name }}", "html": "<p>Hi</p>"},
            "*": {"title": "Gold"},
        },
    }
    spec = parse_offer("catalogue", raw, CATALOG)
    assert spec.id == "catalogue:gold.upgrade-2"
    assert (spec.provider, spec.key, spec.name) == ("catalogue", "gold.upgrade-2", "Gold upgrade")
    assert (spec.value, spec.cost, spec.priority, spec.levers) == (120.0, 4.5, 7.0, 1.5)
    assert spec.tags == ("upsell", "gold")
    assert spec.valid_from == datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    assert spec.valid_until == datetime(2026, 12, 31, tzinfo=UTC)  # a date: midnight UTC
    assert spec.valid_from.tzinfo is UTC
    assert spec.eligibility == And((Field("trait", "age", Predicate(">=", 18)), SegmentRef("vip")))
    assert spec.prerequisites == (("catalogue:welcome", "shown"), ("crm:intro", "accepted"))
    assert (spec.budget, spec.propensity) == (1000, "p_gold")
    assert spec.channels == ("email", "*")
    assert spec.content_for("email")["html"] == "<p>Hi</p>"
    assert spec.content_for("sms") == {"title": "Gold"}  # "*": any channel
    assert spec.definition_json() == raw


def test_the_mapping_strategies_receive_is_plain_and_read_only():
    spec = parse_offer("catalogue", offer(valid_until="2030-01-01T00:00:00Z", tags=["a"]), CATALOG)
    mapping = spec.as_mapping()
    assert mapping["id"] == "catalogue:welcome"
    assert mapping["value"] == 10.0 and mapping["cost"] == 0.0 and mapping["levers"] == 1.0
    assert mapping["valid_until"] == "2030-01-01T00:00:00+00:00"
    assert mapping["valid_from"] is None and mapping["eligibility"] is None
    assert mapping["tags"] == ("a",)
    assert mapping["content"]["email"]["subject"].startswith("Hi ")
    mapping["name"] = "changed"  # a new dict each time …
    assert spec.as_mapping()["name"] == "Welcome discount"
    with pytest.raises(TypeError):  # … whose nested values cannot be changed
        mapping["content"]["email"]["subject"] = "x"  # type: ignore[index]


def test_defaults_naive_times_and_toml_dates():
    spec = parse_offer(
        "catalogue",
        offer(valid_from=date(2026, 2, 1), valid_until="2026-03-01T10:00:00"),
        STRUCTURAL,
    )
    assert spec.valid_from == datetime(2026, 2, 1, tzinfo=UTC)
    assert spec.valid_until == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert spec.definition_json()["valid_from"] == "2026-02-01"
    assert (spec.cost, spec.priority, spec.levers, spec.tags) == (0.0, 0.0, 1.0, ())
    assert (spec.budget, spec.propensity, spec.eligibility, spec.prerequisites) == (
        None,
        None,
        None,
        (),
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("welcome", "definition: expected an object"),
        ([WELCOME], "definition: expected an object"),
        (offer(colour="red"), "definition.colour: unknown key"),
        (offer(id="x:y"), "definition.id: unknown key"),
        ({k: v for k, v in WELCOME.items() if k != "content"}, "definition.content: required"),
        (offer(name=None), "definition.name: required"),
        (offer(key="bad key!"), "definition.key: 1 to 128 letters"),
        (offer(key="k" * 129), "definition.key: 1 to 128 letters"),
        (offer(key="a:b"), "definition.key: 1 to 128 letters"),
        (offer(key="a\n"), "definition.key: 1 to 128 letters"),
        (offer(name=""), "definition.name: expected a name of 1 to 255"),
        (offer(name=" padded"), "definition.name: expected a name"),
        (offer(name="n" * 256), "definition.name: expected a name"),
        (offer(name="a\x00b"), "definition.name: contains a NUL character"),
        (offer(value="ten"), "definition.value: expected a number, got 'ten'"),
        (offer(value=True), "definition.value: expected a number, got True"),
        (offer(value=float("nan")), "definition.value: expected a finite number"),
        (offer(value=float("inf")), "definition.value: expected a finite number"),
        (offer(value=10**16), "definition.value: at most 1e+15 in size"),
        (offer(value=10**30), "definition.value: integers are limited to 64 bits"),
        (offer(cost=-1), "definition.cost: must be at least 0"),
        (offer(levers=-0.5), "definition.levers: must be at least 0"),
        (offer(priority=[1]), "definition.priority: expected a number"),
        (offer(tags="vip"), "definition.tags: expected a list of at most 64 tags"),
        (offer(tags=[f"t{i}" for i in range(65)]), "definition.tags: expected a list"),
        (offer(tags=["a", "a"]), "definition.tags[1]: 'a' is listed twice"),
        (offer(tags=["ok", 3]), "definition.tags[1]: a tag is 1 to 64 characters"),
        (offer(tags=["t" * 65]), "definition.tags[0]: a tag is 1 to 64 characters"),
        (offer(valid_until="soon"),
         "definition.valid_until: expected an ISO-8601 time, got 'soon'"),
        (offer(valid_from=20260101), "definition.valid_from: expected an ISO-8601 time"),
        (offer(valid_until="2026-13-01"), "definition.valid_until: expected an ISO-8601 time"),
        (offer(valid_from="2026-02-01", valid_until="2026-01-01"),
         "definition.valid_until: must be later than valid_from"),
        (offer(eligibility={"and": [{"trait": "plan", "op": "~", "value": "pro"}]}),
         "definition.eligibility.and[0].op: expected one of"),
        (offer(eligibility={"segment": "nope"}),
         "definition.eligibility.segment: no segment has the key 'nope'"),
        (offer(eligibility={"computed": "nope", "op": ">", "value": 1}),
         "definition.eligibility.computed: no computed trait has the key 'nope'"),
        (offer(eligibility={"trait": "height", "op": ">", "value": 1}),
         "definition.eligibility.trait: unknown trait 'height'"),
        (offer(eligibility="plan = pro"), "definition.eligibility: expected an object"),
        (offer(prerequisites={"offer": "a"}), "definition.prerequisites: expected a list"),
        (offer(prerequisites=["intro"]), "definition.prerequisites[0]: expected {"),
        (offer(prerequisites=[{"offer": "intro", "outcome": "clicked"}]),
         "definition.prerequisites[0].outcome: expected accepted or shown, got 'clicked'"),
        (offer(prerequisites=[{"offer": "welcome"}]),
         "definition.prerequisites[0].offer: an offer cannot be its own prerequisite"),
        (offer(prerequisites=[{"offer": "a:b:c"}]),
         "definition.prerequisites[0].offer: expected an offer id '<provider>:<key>'"),
        (offer(prerequisites=[{"offer": "intro", "when": "now"}]),
         "definition.prerequisites[0].when: unknown key"),
        (offer(prerequisites=[{"offer": "intro"}, {"offer": "catalogue:intro"}]),
         "definition.prerequisites[1].offer: 'catalogue:intro' is listed twice"),
        (offer(budget=-1), "definition.budget: expected a whole number of presentations"),
        (offer(budget=1.5), "definition.budget: expected a whole number"),
        (offer(budget=2**31), "definition.budget: expected a whole number"),
        (offer(budget=True), "definition.budget: expected a whole number"),
        (offer(propensity=7), "definition.propensity: expected a name"),
        (offer(content={}), "definition.content: expected {"),
        (offer(content="Hi"), "definition.content: expected {"),
        (offer(content={"e mail": {"subject": "x"}}), "definition.content.e mail: a channel is"),
        (offer(content={"email": "Hi"}), "definition.content.email: expected {"),
        (offer(content={f"c{i}": {} for i in range(17)}), "definition.content: at most 16"),
        (offer(content={"email": {"1x": "x"}}), "definition.content.email.1x: a field name"),
        (offer(content={"email": {"subject": 42}}),
         "definition.content.email.subject: expected a template (a string)"),
        (offer(content={"email": {"subject": "Hi {{ profile.traits.first_name }"}}),
         "definition.content.email.subject: unexpected '}'"),
        (offer(content={"email": {"html": "{{ ''.__class__.__mro__ }}"}}),
         "definition.content.email.html: refused by the template sandbox: templates cannot "
         "read '__class__'"),
        (offer(content={"*": {"text": "{{ cycler.__init__.__globals__ }}"}}),
         "definition.content.*.text: refused by the template sandbox: templates cannot read "
         "'__init__'"),
        (offer(content={"email": {"html": "{{ x }}" + "x" * 100_000}}),
         "definition.content.email.html: too large: a template is at most 100000 characters"),
        (offer(content={"email": {"html": "x" * 300_000}}),
         "definition: longer than 262144 characters in all"),
        ({**WELCOME, 1: "x"}, "definition: every key must be a string"),
    ],
)  # fmt: skip
def test_malformed_and_hostile_offers_are_refused_naming_the_path(raw, expected):
    message = parse_error(raw)
    assert message.startswith(expected), message


def test_errors_are_offer_errors_with_their_path():
    with pytest.raises(OfferError) as caught:
        parse_offer("catalogue", offer(valid_until="soon"), CATALOG, path="offers[3]")
    assert caught.value.path == "offers[3].valid_until"
    assert str(caught.value) == "offers[3].valid_until: expected an ISO-8601 time, got 'soon'"


# --- the catalogue plugin ------------------------------------------------------------------------


def host() -> PluginHost:
    return PluginHost(PluginsConfig())  # discovers the bundled plugins through entry points


def test_the_catalogue_is_a_bundled_plugin_found_through_its_entry_point():
    plugins = host()
    assert plugins.plugins["catalogue"].enabled
    assert ("content_provider", "catalogue") in plugins.plugins["catalogue"].components
    assert issubclass(plugins.component("content_provider", "catalogue"), ContentProvider)


def test_config_offers_and_saved_ones_saved_winning_on_the_same_key():
    entry = ComponentEntry(
        name="shop",
        type="catalogue",
        offers=[offer(key="a", name="A"), offer(key="b", name="B from config")],
    )
    provider = host().create("content_provider", entry, "cdp.toml: content_providers[0]")
    supplied = provider.offers([offer(key="b", name="B saved"), offer(key="c", name="C")])
    assert [(o["key"], o["name"]) for o in supplied] == [
        ("a", "A"),
        ("b", "B saved"),
        ("c", "C"),
    ]
    assert [o["key"] for o in provider.offers([])] == ["a", "b"]


def test_rendering_picks_the_channel_then_any_channel():
    entry = ComponentEntry(name="catalogue", type="catalogue")
    provider = host().create("content_provider", entry, "cdp.toml")
    spec = parse_offer(
        "catalogue",
        offer(
            content={
                "email": {
                    "subject": "Hi {{ profile.traits.first_name }}",
                    "html": "<p>{{ profile.traits.first_name }}, {{ offer.value }} off</p>",
                },
                "*": {"title": "{{ offer.name }}"},
            }
        ),
        CATALOG,
    )
    person = {"id": "p", "traits": {"first_name": "<Ada>"}, "computed_traits": {}, "scores": {}}
    assert provider.render(spec.as_mapping(), person, "email") == {
        "subject": "Hi <Ada>",
        "html": "<p>&lt;Ada&gt;, 10 off</p>",
    }
    assert provider.render(spec.as_mapping(), person, "web") == {"title": "Welcome discount"}
    email_only = parse_offer("catalogue", WELCOME, CATALOG)
    with pytest.raises(UserError) as caught:
        provider.render(email_only.as_mapping(), person, "sms")
    assert str(caught.value) == "offer 'catalogue:welcome' has no content for the sms channel"
    with pytest.raises(UserError) as caught:
        provider.render(spec.as_mapping(), {"id": "p", "traits": {}}, "email")
    assert str(caught.value).startswith("content.email.subject: 'first_name' is not set")


@pytest.mark.parametrize(
    ("offers", "expected"),
    [
        ([offer(content={"email": {"subject": "{{ x }"}})],
         "cdp.toml: content_providers[0].offers[0].content.email.subject: unexpected '}'"),
        ([WELCOME, offer(value="ten")],
         "cdp.toml: content_providers[0].offers[1].value: expected a number, got 'ten'"),
        ([WELCOME, WELCOME],
         "cdp.toml: content_providers[0].offers[1].key: another offer has the key 'welcome'"),
        (["welcome"], "cdp.toml: content_providers[0].offers.0: Input should be a valid dict"),
    ],
)  # fmt: skip
def test_bad_config_offers_stop_the_start_naming_them(offers, expected):
    config = make_config(
        "sqlite://",
        content_providers=[ComponentEntry(name="catalogue", type="catalogue", offers=offers)],
    )
    with pytest.raises(ConfigError) as caught:
        load_providers(config, host())
    assert str(caught.value).startswith(expected), caught.value


def test_bad_provider_entries_are_named():
    def fails(*entries: ComponentEntry) -> str:
        with pytest.raises(ConfigError) as caught:
            load_providers(make_config("sqlite://", content_providers=list(entries)), host())
        return str(caught.value)

    entry = ComponentEntry(name="catalogue", type="catalogue")
    assert fails(entry, entry) == (
        "cdp.toml: content_providers[1].name: another content provider is named 'catalogue'"
    )
    assert fails(ComponentEntry(name="c", type="catalogue", colour="red")) == (
        "cdp.toml: content_providers[0].colour: unknown key"
    )
    assert fails(ComponentEntry(name="c", type="nope")).startswith(
        "cdp.toml: content_providers[0].type: no content_provider type 'nope' is installed"
    )
    assert fails(ComponentEntry(name="c" * 65, type="catalogue")).startswith(
        "cdp.toml: content_providers[0].name: at most 64"
    )


def test_config_file_offers_with_toml_tables_and_dates(tmp_path: Path):
    file = tmp_path / "cdp.toml"
    file.write_text(
        """
[[content_providers]]
name = "shop"
type = "catalogue"
offers = [
  { key = "welcome", name = "Welcome discount", value = 10, valid_until = 2030-01-31, \
content = { email = { subject = "Hi {{ profile.traits.first_name }}", html = "<p>…</p>" } } },
]

[[content_providers]]
name = "more"
type = "catalogue"

[[content_providers.offers]]
key = "gold"
name = "Gold"
value = 100
valid_from = 2030-01-01T09:00:00+01:00
content.email.subject = "Gold for {{ profile.traits.first_name | default('you') }}"
""",
        encoding="utf-8",
    )
    config = load_config(file, environ={})
    found = load_providers(config, host())
    assert list(found) == ["shop", "more"]
    [welcome] = (parse_offer("shop", raw, STRUCTURAL) for raw in found["shop"].offers([]))
    [gold] = (parse_offer("more", raw, STRUCTURAL) for raw in found["more"].offers([]))
    assert welcome.id == "shop:welcome"
    assert welcome.valid_until == datetime(2030, 1, 31, tzinfo=UTC)
    assert gold.valid_from == datetime(2030, 1, 1, 8, tzinfo=UTC)
    assert gold.definition_json()["valid_from"] == "2030-01-01T09:00:00+01:00"


def test_no_entry_means_one_default_catalogue_and_a_blocked_one_means_none():
    found = load_providers(make_config("sqlite://"), host())
    assert list(found) == ["catalogue"]
    assert found["catalogue"].name == "catalogue"
    blocked = PluginHost(PluginsConfig(block=["catalogue"]))
    assert load_providers(make_config("sqlite://"), blocked) == {}


# --- the service, on every backend ---------------------------------------------------------------


class Feed(ContentProvider):
    """A vendor-style provider with a source of its own (a list tests change)."""

    name = "feed"
    supplied: list[Any] = []
    calls = 0
    broken = False

    def offers(self, stored):
        type(self).calls += 1
        if type(self).broken:
            raise RuntimeError("the feed is down")
        return list(type(self).supplied)

    def render(self, offer, profile, channel):
        if channel == "boom":
            raise RuntimeError("secret internals")
        if channel == "odd":
            return {"title": 42}
        return {"title": f"{offer['name']} for {profile['id']}", "keys": ",".join(sorted(profile))}


@pytest.fixture
def feed_runtime(database_url):
    Feed.supplied, Feed.calls, Feed.broken = [], 0, False
    plugin = types.SimpleNamespace(register_content_providers=hookimpl(lambda: [Feed]))
    config = make_config(
        database_url,
        content_providers=[
            ComponentEntry(name="catalogue", type="catalogue", offers=[offer(key="cfg")]),
            ComponentEntry(name="feed", type="feed"),
        ],
    )
    runtime = Runtime.start(config, extra_plugins=[("feed", plugin)])
    yield runtime
    runtime.close()


def ids(runtime: Runtime, cache: OfferCache) -> list[str]:
    with runtime.sessions() as session:
        return [o.id for o in cache.offers(session, runtime, utcnow())]


def test_upsert_stores_validated_offers_that_the_cache_serves(runtime):
    spec = catalogue.upsert_offer(runtime, "catalogue", WELCOME)
    assert spec.id == "catalogue:welcome"
    with runtime.sessions() as session:
        row = session.get(Offer, ("catalogue", "welcome"))
        assert row is not None and row.definition == WELCOME
        created = row.created_at
    cache = OfferCache()
    assert ids(runtime, cache) == ["catalogue:welcome"]
    changed = catalogue.upsert_offer(runtime, "catalogue", offer(name="Welcome back"))
    assert changed.name == "Welcome back"
    with runtime.sessions() as session:
        row = session.get(Offer, ("catalogue", "welcome"))
        assert row.created_at == created and row.updated_at > created
        assert row.definition["name"] == "Welcome back"
    with runtime.sessions() as session:
        [served] = cache.offers(session, runtime, utcnow())
    assert served.name == "Welcome back"  # a save in this process is seen at once
    assert count(runtime, Offer) == 1


def test_upsert_refuses_unknown_providers_and_bad_definitions(runtime):
    with pytest.raises(UserError) as caught:
        catalogue.upsert_offer(runtime, "crm", WELCOME)
    assert str(caught.value) == (
        "provider: no content provider is named 'crm' (configured: catalogue)"
    )
    with pytest.raises(UserError) as caught:
        catalogue.upsert_offer(runtime, "catalogue", offer(value="ten"))
    assert str(caught.value) == "definition.value: expected a number, got 'ten'"
    # Checked against the store: no profile has `age` yet, so `>` cannot be checked …
    older = offer(eligibility={"trait": "age", "op": ">", "value": 30})
    with pytest.raises(UserError) as caught:
        catalogue.upsert_offer(runtime, "catalogue", older)
    assert str(caught.value).startswith("definition.eligibility.trait: unknown trait 'age'")
    with pytest.raises(UserError) as caught:
        catalogue.upsert_offer(runtime, "catalogue", offer(eligibility={"segment": "vip"}))
    assert str(caught.value) == "definition.eligibility.segment: no segment has the key 'vip'"
    with pytest.raises(UserError) as caught:
        catalogue.upsert_offer(runtime, "catalogue", offer(prerequisites=[{"offer": "crm:x"}]))
    assert str(caught.value) == (
        "definition.prerequisites[0].offer: no content provider is named 'crm'"
    )
    assert count(runtime, Offer) == 0
    # … once a profile has it, it can.
    send(runtime, msg("identify", userId="u1", traits={"age": 41}))
    saved = catalogue.upsert_offer(runtime, "catalogue", older)
    assert saved.eligibility == Field("trait", "age", Predicate(">", 30))


def test_delete_offer(runtime):
    catalogue.upsert_offer(runtime, "catalogue", WELCOME)
    cache = OfferCache()
    assert ids(runtime, cache) == ["catalogue:welcome"]
    catalogue.delete_offer(runtime, "catalogue:welcome")
    assert count(runtime, Offer) == 0
    assert ids(runtime, cache) == []
    with pytest.raises(NotFoundError) as caught:
        catalogue.delete_offer(runtime, "catalogue:welcome")
    assert str(caught.value).startswith("id: no saved offer has the id 'catalogue:welcome'")
    for bad in ("welcome", "a:b:c", ":x", "x" * 300, "a\x00:b"):
        with pytest.raises(UserError) as caught:
            catalogue.delete_offer(runtime, bad)
        assert str(caught.value).startswith("id: expected an offer id '<provider>:<key>'")


def test_saved_offers_replace_config_ones_and_deleting_brings_them_back(feed_runtime):
    runtime = feed_runtime
    cache = OfferCache()
    with runtime.sessions() as session:
        [cfg] = cache.offers(session, runtime, utcnow())
    assert (cfg.id, cfg.name) == ("catalogue:cfg", "Welcome discount")
    catalogue.upsert_offer(runtime, "catalogue", offer(key="cfg", name="Saved"))
    with runtime.sessions() as session:
        [saved] = cache.offers(session, runtime, utcnow())
    assert (saved.id, saved.name) == ("catalogue:cfg", "Saved")
    catalogue.delete_offer(runtime, "catalogue:cfg")
    with runtime.sessions() as session:
        [back] = cache.offers(session, runtime, utcnow())
    assert back.name == "Welcome discount"


def test_cache_reloads_only_when_the_store_changes(runtime, monkeypatch):
    catalogue.upsert_offer(runtime, "catalogue", WELCOME)
    loads = []
    original = OfferCache._load

    def counting(self, *args):
        loads.append(1)
        return original(self, *args)

    monkeypatch.setattr(OfferCache, "_load", counting)
    cache = OfferCache(check_seconds=0)  # look at the store on every call
    for _ in range(5):
        assert ids(runtime, cache) == ["catalogue:welcome"]
    assert len(loads) == 1
    # Another process saves an offer: only the store says so.
    with runtime.transaction() as session:
        now = utcnow()
        session.add(
            Offer(
                provider="catalogue",
                key="other",
                definition=offer(key="other"),
                created_at=now,
                updated_at=now,
            )
        )
    assert ids(runtime, cache) == ["catalogue:welcome", "catalogue:other"]
    assert len(loads) == 2
    with runtime.transaction() as session:
        session.execute(delete(Offer).where(Offer.key == "other"))
    assert ids(runtime, cache) == ["catalogue:welcome"]
    assert len(loads) == 3


def test_other_processes_changes_are_seen_within_check_seconds(runtime):
    cache = OfferCache(check_seconds=0.2)
    assert ids(runtime, cache) == []
    with runtime.transaction() as session:
        now = utcnow()
        session.add(
            Offer(
                provider="catalogue", key="w", definition=offer(key="w"), created_at=now,
                updated_at=now,
            )
        )  # fmt: skip
    assert ids(runtime, cache) == []  # not looked at again yet
    time.sleep(0.25)
    assert ids(runtime, cache) == ["catalogue:w"]


def test_providers_own_sources_are_reread_every_refresh_seconds(feed_runtime):
    runtime = feed_runtime
    cache = OfferCache(refresh_seconds=0.2, check_seconds=0)
    Feed.supplied = [offer(key="f1")]
    assert ids(runtime, cache) == ["catalogue:cfg", "feed:f1"]
    Feed.supplied = [offer(key="f1"), offer(key="f2")]
    assert ids(runtime, cache) == ["catalogue:cfg", "feed:f1"]  # nothing in the store changed
    calls = Feed.calls
    time.sleep(0.25)
    assert ids(runtime, cache) == ["catalogue:cfg", "feed:f1", "feed:f2"]
    assert Feed.calls == calls + 1


def test_invalid_offers_from_a_provider_are_dropped_with_a_warning(feed_runtime, caplog):
    runtime = feed_runtime
    Feed.supplied = [
        offer(key="good"),
        offer(key="bad", value="ten"),
        offer(key="good"),  # a second offer with the same key
        "not an offer",
        offer(key="vip_only", eligibility={"segment": "vip"}),  # no such segment
    ]
    cache = OfferCache(check_seconds=0)
    with caplog.at_level(logging.WARNING, logger="cdp.decisions.offers"):
        assert ids(runtime, cache) == ["catalogue:cfg", "feed:good"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "offer 'feed:bad' dropped: definition.value: expected a number, got 'ten'" in warnings
    assert "offer 'feed:good' dropped: another offer of 'feed' has its key" in warnings
    assert any(w.startswith("offer #3 of content provider 'feed' dropped") for w in warnings)
    assert (
        "offer 'feed:vip_only' dropped: definition.eligibility.segment: no segment has the key "
        "'vip'"
    ) in warnings
    # Once the segment exists, the offer is valid: saving a segment changes the stamp.
    service.upsert_segment(runtime, "vip", {"trait": "plan", "op": "exists"})
    assert ids(runtime, cache) == ["catalogue:cfg", "feed:good", "feed:vip_only"]


def test_a_failing_provider_keeps_its_last_offers_and_breaks_nothing(feed_runtime, caplog):
    runtime = feed_runtime
    cache = OfferCache(check_seconds=0)
    Feed.supplied = [offer(key="f1")]
    assert ids(runtime, cache) == ["catalogue:cfg", "feed:f1"]
    Feed.broken = True
    catalogue.upsert_offer(runtime, "catalogue", offer(key="new"))  # forces a reload
    with caplog.at_level(logging.ERROR, logger="cdp.decisions.offers"):
        assert ids(runtime, cache) == ["catalogue:cfg", "catalogue:new", "feed:f1"]
    assert "content provider 'feed' failed to list its offers" in caplog.text
    fresh = OfferCache()
    assert ids(runtime, fresh) == ["catalogue:cfg", "catalogue:new"]  # nothing to keep


def test_render_through_the_offers_provider(feed_runtime, caplog):
    runtime = feed_runtime
    Feed.supplied = [offer(key="f1")]
    cache = OfferCache()
    with runtime.sessions() as session:
        by_id = {o.id: o for o in cache.offers(session, runtime, utcnow())}
    person = {
        "id": "p1",
        "traits": {"first_name": "Ada"},
        "computed_traits": {},
        "scores": {},
        "segments": ["vip"],
        "merged_ids": ["p1", "p0"],
    }
    assert catalogue.render(runtime, by_id["catalogue:cfg"], person, "email") == {
        "subject": "Hi Ada"
    }
    # Providers get the profile's documented keys only.
    assert catalogue.render(runtime, by_id["feed:f1"], person, "web") == {
        "title": "Welcome discount for p1",
        "keys": "computed_traits,id,scores,traits",
    }
    with (
        caplog.at_level(logging.ERROR, logger="cdp.decisions.offers"),
        pytest.raises(UserError) as caught,
    ):
        catalogue.render(runtime, by_id["feed:f1"], person, "boom")
    assert str(caught.value) == (
        "offer 'feed:f1': its content provider failed to render it (see the server log)"
    )
    assert "secret internals" not in str(caught.value)
    assert "secret internals" in caplog.text
    with pytest.raises(UserError) as caught:
        catalogue.render(runtime, by_id["feed:f1"], person, "odd")
    assert "returned a field that is not text" in str(caught.value)
    with pytest.raises(UserError) as caught:
        catalogue.render(runtime, by_id["catalogue:cfg"], person, "sms")
    assert str(caught.value) == "offer 'catalogue:cfg' has no content for the sms channel"


def test_providers_are_created_once_per_runtime(runtime):
    first = providers(runtime)
    assert list(first) == ["catalogue"]
    assert providers(runtime) is first
    assert catalogue.offer_cache(runtime) is catalogue.offer_cache(runtime)


def test_eligibility_of_saved_offers_is_evaluated_by_the_store(runtime):
    # The parsed condition is the one segments use: a profile of the store meets it or not.
    send(runtime, msg("identify", userId="pro", traits={"plan": "pro"}))
    send(runtime, msg("identify", userId="free", traits={"plan": "free"}))
    spec = catalogue.upsert_offer(
        runtime, "catalogue", offer(eligibility={"trait": "plan", "op": "=", "value": "pro"})
    )
    assert spec.eligibility is not None
    preview = service.preview(runtime, spec.definition_json()["eligibility"])
    assert preview.sample == [owner(runtime, "user_id", "pro")]
    with runtime.sessions() as session:
        assert session.scalar(select(Segment.key)) is None


def test_concurrent_saves_of_one_key_all_succeed(runtime):
    errors: list[BaseException] = []

    def save(i: int) -> None:
        try:
            catalogue.upsert_offer(runtime, "catalogue", offer(name=f"Version {i}"))
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count(runtime, Offer) == 1
    with runtime.sessions() as session:
        row = session.get(Offer, ("catalogue", "welcome"))
        assert row is not None and row.definition["name"].startswith("Version ")
        stamps = session.scalars(select(Offer.updated_at)).all()
    assert len(stamps) == 1


def test_providers_at_start_name_the_config_file(database_url):
    bad = ComponentEntry(name="catalogue", type="catalogue", offers=[offer(value="ten")])
    runtime = Runtime.start(make_config(database_url, content_providers=[bad]))
    try:
        with pytest.raises(ConfigError) as caught:
            providers(runtime, "/etc/cdp/cdp.toml")
        assert str(caught.value) == (
            "/etc/cdp/cdp.toml: content_providers[0].offers[0].value: expected a number, got 'ten'"
        )
    finally:
        runtime.close()
