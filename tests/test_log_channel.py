from __future__ import annotations

import logging

import pytest

from cdp.components import Message
from cdp.config import ComponentEntry, PluginsConfig
from cdp.errors import ConfigError
from cdp.plugins import PluginHost


def sender(**options):
    host = PluginHost(PluginsConfig(enable=["log"]))
    return host.create("channel", ComponentEntry(name="dev", type="log", **options), "channels[0]")


def test_delivery_is_logged_once_per_delivery_id(caplog):
    log_channel = sender(level="WARNING")
    message = Message("del-1", "dev", "ada@example.com", {"subject": "Hi", "text": "Hello"}, "p1")
    with caplog.at_level(logging.INFO, logger="cdp.channels.log"):
        first = log_channel.send(message)
        second = log_channel.send(message)
    records = [r for r in caplog.records if r.name == "cdp.channels.log"]
    assert [r.levelname for r in records] == ["WARNING"]
    assert records[0].delivery_id == "del-1"
    assert records[0].content == {"subject": "Hi", "text": "Hello"}
    assert first.status == second.status == "delivered"
    assert second.detail == "repeat dropped"


def test_bad_level_is_a_config_error():
    with pytest.raises(ConfigError, match=r"channels\[0\].level: Input should be"):
        sender(level="LOUD")
