"""Identity resolution through the ingestion pipeline, on a real database."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta

from identity_helpers import T0, count, identifiers, live_profiles, msg, owner, send
from sqlalchemy import select

from cdp.config import TraitsConfig
from cdp.db.models import Consent, Event, IdentityEdge, Merge, Profile, ProfileGroup
from cdp.hookspecs import hookimpl
from cdp.identity.rules import IdentifierType, IdentityConfig
from cdp.runtime import Runtime


def test_anonymous_visitor_who_identifies_becomes_one_profile(runtime):
    send(runtime, msg("page", anonymousId="a1", name="Home"))
    send(runtime, msg("track", anonymousId="a2", event="Viewed"))
    assert len(live_profiles(runtime)) == 2
    send(
        runtime,
        msg(
            "identify",
            userId="u1",
            anonymousId="a1",
            traits={"email": " Ada@Example.COM ", "name": "Ada"},
        ),
    )
    send(runtime, msg("identify", anonymousId="a2", traits={"email": "ada@example.com"}))
    [profile] = live_profiles(runtime)
    assert identifiers(runtime, profile.id) == {
        ("user_id", "u1"),
        ("anonymous_id", "a1"),
        ("anonymous_id", "a2"),
        ("email", "ada@example.com"),
    }
    assert profile.traits == {"email": "ada@example.com", "name": "Ada"}
    with runtime.sessions() as session:
        events = session.scalars(select(Event)).all()
        merges = session.scalars(select(Merge)).all()
        edges = session.scalars(select(IdentityEdge)).all()
    assert {e.profile_id for e in events} == {profile.id}
    assert all(e.processed_at is not None and e.error is None for e in events)
    [merge] = merges
    assert merge.survivor_id == profile.id
    assert "linked anonymous_id=a2" in merge.reason or "email=ada@example.com" in merge.reason
    # every link has an event as provenance
    assert edges and all(edge.event_id is not None and edge.source == "web" for edge in edges)


def test_limit_keeps_two_users_on_a_shared_device_apart(runtime):
    # The example of cdp/identity/resolver.py's docstring.
    send(runtime, msg("identify", userId="u1", anonymousId="laptop"))
    send(runtime, msg("identify", userId="u2"))
    [result] = send(runtime, msg("track", userId="u2", anonymousId="laptop", event="Login"))
    assert len(live_profiles(runtime)) == 2
    assert result.profile_id == owner(runtime, "user_id", "u2")
    assert owner(runtime, "anonymous_id", "laptop") == owner(runtime, "user_id", "u1")
    assert count(runtime, Merge) == 0


def test_windowed_limit_counts_only_recent_identifiers(database_url):
    from conftest import make_config

    rules = IdentityConfig(
        types={"anonymous_id": IdentifierType(priority=5, limit=1, window_days=30)}
    )
    runtime = Runtime.start(make_config(database_url, identity=rules))
    try:
        now = datetime.now(UTC)
        send(
            runtime,
            msg("identify", at=now - timedelta(days=60), userId="u1", anonymousId="old-device"),
        )
        # last seen 60 days ago: the old device no longer counts towards the limit of one
        send(runtime, msg("identify", at=now, userId="u1", anonymousId="new-device"))
        assert owner(runtime, "anonymous_id", "new-device") == owner(runtime, "user_id", "u1")
        # a third device while the second is within the window: over the limit, not added
        send(runtime, msg("identify", at=now, userId="u1", anonymousId="third-device"))
        assert owner(runtime, "anonymous_id", "third-device") is None
    finally:
        runtime.close()


def test_blocked_values_never_link_people(runtime):
    send(runtime, msg("identify", userId="u1", anonymousId="null", traits={"email": "a@x.io"}))
    send(runtime, msg("identify", userId="u2", anonymousId="null", traits={"email": "b@x.io"}))
    assert len(live_profiles(runtime)) == 2
    assert owner(runtime, "anonymous_id", "null") is None


def test_message_with_only_blocked_identifiers_is_stored_but_unattached(runtime):
    [result] = send(runtime, msg("track", anonymousId="undefined", event="Viewed"))
    assert result.event_id is not None and result.profile_id is None
    with runtime.sessions() as session:
        event = session.get(Event, result.event_id)
    assert (event.profile_id, event.error) == (None, "no usable identifier")
    assert event.processed_at is not None


def test_late_older_event_does_not_overwrite_a_newer_trait(runtime):
    send(runtime, msg("identify", at=T0, userId="u1", traits={"plan": "pro", "city": "Oslo"}))
    send(
        runtime,
        msg("identify", at=T0 - timedelta(days=1), userId="u1", traits={"plan": "free", "age": 41}),
    )
    [profile] = live_profiles(runtime)
    assert profile.traits == {"plan": "pro", "city": "Oslo", "age": 41}
    assert profile.trait_sources["plan"]["at"].startswith("2026-03-01T12:00:00")
    assert profile.trait_sources["age"]["source"] == "web"


def test_source_priority_protects_trusted_values(database_url):
    from conftest import make_config

    runtime = Runtime.start(
        make_config(database_url, traits=TraitsConfig(source_priority={"crm": 10}))
    )
    try:
        send(
            runtime,
            msg("identify", at=T0, userId="u1", traits={"name": "Ada Lovelace"}),
            source="crm",
        )
        send(
            runtime,
            msg(
                "identify",
                at=T0 + timedelta(days=1),
                userId="u1",
                traits={"name": "ada", "nick": "al"},
            ),
            source="web",
        )
        [profile] = live_profiles(runtime)
        assert profile.traits == {"name": "Ada Lovelace", "nick": "al"}
        assert profile.trait_sources["name"]["source"] == "crm"
    finally:
        runtime.close()


def test_consent_is_stored_with_time_and_source_and_newest_wins(runtime):
    consent = {"consent": {"categoryPreferences": {"marketing": True, "analytics": False}}}
    send(runtime, msg("track", at=T0, userId="u1", event="Signed Up", context=consent))
    older = {"consent": {"categoryPreferences": {"marketing": False}}}
    send(runtime, msg("track", at=T0 - timedelta(hours=1), userId="u1", event="x", context=older))
    with runtime.sessions() as session:
        rows = {r.purpose: r for r in session.scalars(select(Consent))}
    assert {p: r.status for p, r in rows.items()} == {"marketing": "granted", "analytics": "denied"}
    assert rows["marketing"].source == "web"
    assert rows["marketing"].updated_at == T0


def test_alias_links_the_previous_id(runtime):
    send(runtime, msg("page", anonymousId="anon-7", name="Pricing"))
    send(runtime, msg("identify", userId="u7"))
    send(runtime, msg("alias", userId="u7", previousId="anon-7"))
    [profile] = live_profiles(runtime)
    assert identifiers(runtime, profile.id) == {("user_id", "u7"), ("anonymous_id", "anon-7")}


def test_group_membership_is_recorded_not_matched(runtime):
    send(runtime, msg("group", userId="u1", groupId="acme", traits={"plan": "enterprise"}))
    send(runtime, msg("group", userId="u2", groupId="acme", traits={"employees": 50}))
    assert len(live_profiles(runtime)) == 2
    with runtime.sessions() as session:
        groups = session.scalars(select(ProfileGroup).order_by(ProfileGroup.updated_at)).all()
    assert [(g.group_id, g.traits) for g in groups] == [
        ("acme", {"plan": "enterprise"}),
        ("acme", {"employees": 50}),
    ]
    # group traits describe the group, not the person
    assert all(p.traits == {} for p in live_profiles(runtime))


def test_replayed_message_changes_nothing(runtime):
    message = msg("identify", userId="u1", traits={"name": "Ada"})
    [first] = send(runtime, message)
    [again] = send(runtime, message)
    assert first.event_id is not None and again.event_id is None
    assert count(runtime, Event) == 1


def test_merge_keeps_the_oldest_profile_and_old_ids_resolve(runtime):
    from cdp.profiles import get_profile

    send(runtime, msg("identify", at=T0, userId="u1", traits={"a": 1}))
    send(
        runtime,
        msg(
            "identify",
            at=T0 + timedelta(hours=1),
            anonymousId="x",
            traits={"email": "e@x.io", "b": 2},
        ),
    )
    old = owner(runtime, "anonymous_id", "x")
    survivor = owner(runtime, "user_id", "u1")
    send(runtime, msg("identify", at=T0 + timedelta(hours=2), userId="u1", anonymousId="x"))
    assert owner(runtime, "anonymous_id", "x") == survivor
    with runtime.sessions() as session:
        resolved = get_profile(session, old)
        assert resolved.id == survivor
        assert resolved.traits == {"a": 1, "email": "e@x.io", "b": 2}
        assert session.get(Profile, old).merged_into == survivor


def test_hooks_observe_ingestion_and_merges(config):
    seen = []
    observer = types.SimpleNamespace(
        event_ingested=hookimpl(
            lambda event, profile_id: seen.append(("event", event["type"], profile_id))
        ),
        profiles_merged=hookimpl(
            lambda survivor_id, merged_ids, reason: seen.append(
                ("merge", survivor_id, tuple(merged_ids))
            )
        ),
    )
    runtime = Runtime.start(config, extra_plugins=[("observer", observer)])
    try:
        send(runtime, msg("page", anonymousId="a1"))
        anon_profile = owner(runtime, "anonymous_id", "a1")
        send(runtime, msg("identify", userId="u1"))
        user_profile = owner(runtime, "user_id", "u1")
        send(runtime, msg("identify", userId="u1", anonymousId="a1"))
    finally:
        runtime.close()
    assert seen == [
        ("event", "page", anon_profile),
        ("event", "identify", user_profile),
        ("merge", anon_profile, (user_profile,)),
        ("event", "identify", anon_profile),
    ]


def test_failed_resolution_leaves_events_for_the_backlog(runtime, monkeypatch):
    from cdp.identity import resolver
    from cdp.ingest.pipeline import Pipeline

    original = resolver.Resolver._apply

    def poisoned(self, event, profile, shared):
        if event.payload.get("event") == "Poison":
            raise ValueError("cannot apply this one")
        original(self, event, profile, shared)

    monkeypatch.setattr(resolver.Resolver, "_apply", poisoned)
    results = send(
        runtime, msg("track", userId="u1", event="Fine"), msg("track", userId="u2", event="Poison")
    )
    assert all(r.event_id is not None and r.profile_id is None for r in results)  # stored
    assert Pipeline(runtime).process_backlog() == 2
    with runtime.sessions() as session:
        events = {e.name: e for e in session.scalars(select(Event))}
    assert events["Fine"].profile_id == owner(runtime, "user_id", "u1")
    assert events["Poison"].error == "ValueError: cannot apply this one"
    assert events["Poison"].processed_at is not None
    assert Pipeline(runtime).process_backlog() == 0


def test_hooks_name_the_final_survivor_when_merges_chain_in_one_chunk(config):
    from datetime import timedelta as _td

    merged = []
    observer = types.SimpleNamespace(
        profiles_merged=hookimpl(
            lambda survivor_id, merged_ids, reason: merged.append((survivor_id, tuple(merged_ids)))
        ),
    )
    runtime = Runtime.start(config, extra_plugins=[("observer", observer)])
    try:
        send(runtime, msg("identify", at=T0 + _td(days=2), userId="u1"))
        stored = owner(runtime, "user_id", "u1")
        # One chunk: an older anonymous visitor (new profile N) absorbs the stored u1 profile
        # (N is older by event time), then N is folded into a still older e-mail profile M.
        send(
            runtime,
            msg("page", at=T0, anonymousId="a-old", context={"traits": {"email": "m@x.io"}}),
            msg("page", at=T0 + _td(days=1), anonymousId="a1"),
            msg("identify", at=T0 + _td(days=3), userId="u1", anonymousId="a1"),
            msg("identify", at=T0 + _td(days=4), anonymousId="a1", traits={"email": "m@x.io"}),
        )
        final = owner(runtime, "user_id", "u1")
    finally:
        runtime.close()
    assert final == owner(runtime, "email", "m@x.io")
    assert merged and all(survivor == final for survivor, _ in merged)
    assert any(stored in ids for _, ids in merged)  # the stored profile's merge was heard
