"""A test per hook: each registration hook indexes its components under the right kind, and
each lifecycle hook reaches plugins with the documented arguments."""

from __future__ import annotations

import inspect
import types

import pytest

from cdp import hookspecs
from cdp.components import (
    ChannelSender,
    ContentProvider,
    DecisionStrategy,
    DeliveryResult,
    Enricher,
    Feature,
    Output,
    Ranked,
    RecordBatch,
    SourceConnector,
)
from cdp.config import PluginsConfig
from cdp.hookspecs import hookimpl
from cdp.plugins import REGISTRATION_HOOKS, PluginHost
from cdp.runtime import Runtime


class Source(SourceConnector):
    name = "t-source"

    def read(self, checkpoint):
        yield RecordBatch(records=[{"email": "a@example.com"}], checkpoint="1")


class Model(Enricher):
    name = "t-model"
    task = "clustering"

    def outputs(self):
        return [Output("t_score")]

    def features(self):
        return [Feature("events", "count")]

    def estimator(self):
        from sklearn.cluster import KMeans

        return KMeans(2, n_init=1)


class Strategy(DecisionStrategy):
    name = "t-strategy"

    def rank(self, offers, profile, context):
        return [Ranked(offer_id=o["id"], score=float(o["priority"])) for o in offers]


class Provider(ContentProvider):
    name = "t-provider"

    def offers(self):
        return [{"id": "o1", "priority": 1}]

    def render(self, offer, profile, channel):
        return {"text": f"hi {profile['name']}"}


class Channel(ChannelSender):
    name = "t-channel"

    def send(self, message):
        return DeliveryResult("delivered")


COMPONENTS = {
    "source": Source,
    "enricher": Model,
    "strategy": Strategy,
    "content_provider": Provider,
    "channel": Channel,
}


@pytest.mark.parametrize("kind", sorted(REGISTRATION_HOOKS))
def test_registration_hook(kind):
    cls = COMPONENTS[kind]
    impl = types.SimpleNamespace(**{REGISTRATION_HOOKS[kind]: hookimpl(lambda: [cls])})
    host = PluginHost(PluginsConfig(), extra=[("t", impl)], discover=False)
    assert host.component(kind, cls.name) is cls
    assert host.plugins["t"].components == [(kind, cls.name)]


def test_every_kind_has_a_registration_hook():
    specs = {name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)}
    assert set(REGISTRATION_HOOKS.values()) <= specs


def test_every_hook_is_documented_and_typed():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        assert fn.__doc__, name
        assert "return" in fn.__annotations__, name


def test_startup_receives_the_runtime(config):
    seen = []
    impl = types.SimpleNamespace(startup=hookimpl(lambda runtime: seen.append(runtime)))
    runtime = Runtime.start(config, extra_plugins=[("obs", impl)])
    try:
        assert seen == [runtime]
    finally:
        runtime.close()


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple]] = []

    @hookimpl
    def event_ingested(self, event, profile_id):
        self.seen.append(("event_ingested", (event, profile_id)))

    @hookimpl
    def profiles_merged(self, survivor_id, merged_ids, reason):
        self.seen.append(("profiles_merged", (survivor_id, merged_ids, reason)))

    @hookimpl
    def segment_membership_changed(self, profile_id, segment_key, entered):
        self.seen.append(("segment_membership_changed", (profile_id, segment_key, entered)))


@pytest.mark.parametrize(
    ("hook", "kwargs"),
    [
        ("event_ingested", {"event": {"type": "track", "event": "Signed Up"}, "profile_id": "p1"}),
        ("profiles_merged", {"survivor_id": "p1", "merged_ids": ["p2"], "reason": "same email"}),
        ("segment_membership_changed", {"profile_id": "p1", "segment_key": "vip", "entered": True}),
    ],
)
def test_lifecycle_hook_reaches_plugins(hook, kwargs):
    observer = Observer()
    host = PluginHost(PluginsConfig(), extra=[("obs", observer)], discover=False)
    host.notify(hook, **kwargs)
    assert observer.seen == [(hook, tuple(kwargs.values()))]
