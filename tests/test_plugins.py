from __future__ import annotations

import types

import pytest

from cdp.components import ChannelSender, DeliveryResult, Message, SourceConnector
from cdp.config import ComponentEntry, PluginsConfig
from cdp.errors import ConfigError, PluginError
from cdp.hookspecs import hookimpl
from cdp.plugins import PluginHost


class EchoChannel(ChannelSender):
    name = "echo"

    def send(self, message: Message) -> DeliveryResult:
        return DeliveryResult("delivered", detail=message.to)


def plugin(**hooks: object) -> types.SimpleNamespace:
    """A plugin object whose attributes are hook implementations."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def host(*extra: tuple[str, object], discover: bool = True, **config: object) -> PluginHost:
    return PluginHost(PluginsConfig(**config), extra=extra, discover=discover)


def test_bundled_plugin_is_discovered_through_entry_points():
    found = PluginHost(PluginsConfig())
    assert found.plugins["log"].enabled
    assert ("channel", "log") in found.plugins["log"].components
    assert found.component("channel", "log").__module__ == "cdp_plugins.log_channel"


def test_extra_plugin_components_are_indexed():
    h = host(("echo", plugin(register_channels=lambda: [EchoChannel])), discover=False)
    assert h.component("channel", "echo") is EchoChannel
    assert h.plugins["echo"].kinds == ["channel"]


def test_blocked_plugin_is_not_loaded():
    loaded = []
    echo = plugin(register_channels=lambda: loaded.append(1) or [EchoChannel])
    h = host(("echo", echo), block=["echo", "log"])
    assert not h.plugins["echo"].enabled and not h.plugins["log"].enabled
    assert loaded == []
    with pytest.raises(ConfigError, match="no channel type 'log' is installed"):
        h.component("channel", "log")


def test_allow_list_loads_only_named_plugins():
    h = host(("echo", plugin(register_channels=lambda: [EchoChannel])), enable=["echo"])
    assert h.plugins["echo"].enabled
    assert not h.plugins["log"].enabled


def test_allow_list_naming_an_uninstalled_plugin_is_a_config_error():
    with pytest.raises(ConfigError, match=r"plugins.enable: no installed plugin is named 'smtpp'"):
        host(enable=["smtpp"])


def test_misspelt_hook_is_refused_with_the_plugin_name():
    bad = plugin(register_channel=lambda: [EchoChannel])  # missing "s"
    with pytest.raises(PluginError, match=r"plugin 'typo' failed to load: .*register_channel"):
        host(("typo", bad))


def test_hook_with_unknown_argument_is_refused():
    bad = plugin(event_ingested=lambda event, profile_id, extra: None)
    with pytest.raises(PluginError, match=r"plugin 'args' failed to load"):
        host(("args", bad))


def test_duplicate_component_name_is_refused():
    one = plugin(register_channels=lambda: [EchoChannel])
    two = plugin(register_channels=lambda: [EchoChannel])
    with pytest.raises(
        PluginError, match="channel type 'echo' is already registered by plugin 'one'"
    ):
        host(("one", one), ("two", two))


def test_component_of_the_wrong_kind_is_refused():
    class NotAChannel(SourceConnector):
        name = "nope"

        def read(self, checkpoint):
            return iter(())

    bad = plugin(register_channels=lambda: [NotAChannel])
    with pytest.raises(PluginError, match="not a subclass of ChannelSender"):
        host(("bad", bad))


def test_abstract_component_is_refused():
    class Half(ChannelSender):
        name = "half"

    with pytest.raises(PluginError, match="Half leaves abstract methods unimplemented"):
        host(("half", plugin(register_channels=lambda: [Half])))


def test_plugin_that_fails_to_import_is_reported_by_name():
    def broken():
        raise ImportError("No module named 'vendor_sdk'")

    with pytest.raises(PluginError, match=r"plugin 'broken' failed to load: .*vendor_sdk"):
        host(("broken", plugin(register_channels=broken)))


def test_failing_plugin_is_skipped_when_the_admin_allows_it():
    def broken():
        raise RuntimeError("boom")

    h = host(
        ("broken", plugin(register_channels=broken)),
        ("echo", plugin(register_channels=lambda: [EchoChannel])),
        on_error="skip",
    )
    assert not h.plugins["broken"].enabled
    assert h.plugins["broken"].error == "RuntimeError: boom"
    assert h.component("channel", "echo") is EchoChannel
    assert h.component("channel", "log")  # the bundled one still works


def test_create_validates_the_entry_options():
    h = PluginHost(PluginsConfig())
    sender = h.create("channel", ComponentEntry(name="dev", type="log"), "cdp.toml: channels[0]")
    assert sender.send(Message("d1", "dev", "a@example.com", {"text": "hi"})).status == "delivered"
    with pytest.raises(ConfigError, match=r"^cdp.toml: channels\[0\].colour: unknown key$"):
        h.create(
            "channel", ComponentEntry(name="dev", type="log", colour="red"), "cdp.toml: channels[0]"
        )
    with pytest.raises(ConfigError, match=r"^cdp.toml: channels\[1\].type: no channel type 'smtp'"):
        h.create("channel", ComponentEntry(name="x", type="smtp"), "cdp.toml: channels[1]")


def test_notify_isolates_a_failing_observer(caplog):
    seen = []

    def bad(profile_id, segment_key, entered):
        raise RuntimeError("observer bug")

    h = host(
        ("bad", plugin(segment_membership_changed=bad)),
        (
            "good",
            plugin(
                segment_membership_changed=lambda profile_id, segment_key, entered: seen.append(
                    (profile_id, segment_key, entered)
                )
            ),
        ),
        discover=False,
    )
    h.notify("segment_membership_changed", profile_id="p1", segment_key="vip", entered=True)
    assert seen == [("p1", "vip", True)]
    assert "plugin 'bad' failed in hook segment_membership_changed" in caplog.text
