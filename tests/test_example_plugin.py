"""The example vendor plugin, installed as its own distribution, is discovered like a bundled one.

The module builds `examples/cdp-example-jsonl-channel` with pip into a temporary directory and puts
that directory on `sys.path`: entry points are found by scanning `sys.path` for `*.dist-info`, so
this is what installing it into the environment does, without touching the environment.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import gql

from cdp.components import ChannelSender, DeliveryResult, Message
from cdp.config import ComponentEntry, PluginsConfig
from cdp.errors import ConfigError
from cdp.plugins import PluginHost

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cdp-example-jsonl-channel"
WHERE = "cdp.toml: channels[0]"
PLUGINS = "{ plugins { name version enabled components { kind name } } }"


@pytest.fixture(scope="module", autouse=True)
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example installed into a fresh directory that is on `sys.path` for this module.

    Autouse and module-scoped so it is in place before the function-scoped `runtime` fixture
    builds its PluginHost.
    """
    root = tmp_path_factory.mktemp("example-plugin")
    # pip builds in the source tree (build/, *.egg-info); build a copy to keep the checkout clean.
    source = root / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not install the example:\n{result.stdout}\n{result.stderr}")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(target))  # also invalidates import caches
        importlib.invalidate_caches()
        yield target
    # The module stays imported otherwise, and a later test could still reach its classes.
    sys.modules.pop("cdp_example_jsonl", None)
    importlib.invalidate_caches()


def message(delivery_id: str, to: str = "ada@example.com") -> Message:
    return Message(
        delivery_id=delivery_id,
        channel="archive",
        to=to,
        content={"subject": "Hello", "text": "Hi Ada"},
        profile_id="p-1",
    )


def test_discovered_beside_the_bundled_plugins() -> None:
    host = PluginHost(PluginsConfig())
    assert "log" in host.plugins
    info = host.plugins["jsonl"]
    assert (info.version, info.enabled, info.error) == ("0.1.0", True, None)
    assert info.components == [("channel", "jsonl")]
    assert issubclass(host.component("channel", "jsonl"), ChannelSender)


def test_sends_each_delivery_once(tmp_path: Path) -> None:
    file = tmp_path / "deliveries.jsonl"
    host = PluginHost(PluginsConfig())
    entry = ComponentEntry(name="archive", type="jsonl", path=str(file))
    sender = host.create("channel", entry, WHERE)
    assert isinstance(sender, ChannelSender)

    assert sender.send(message("d-1")) == DeliveryResult("delivered")
    assert sender.send(message("d-1")).status == "delivered"
    assert sender.send(message("d-2", to="bob@example.com")) == DeliveryResult("delivered")

    lines = file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert {k: v for k, v in first.items() if k != "sent_at"} == {
        "delivery_id": "d-1",
        "channel": "archive",
        "to": "ada@example.com",
        "content": {"subject": "Hello", "text": "Hi Ada"},
        "profile_id": "p-1",
    }
    assert (second["delivery_id"], second["to"]) == ("d-2", "bob@example.com")
    assert first["sent_at"].endswith("+00:00")

    # A new sender (a restart) reads the ids already written and does not repeat them.
    restarted = host.create("channel", entry, WHERE)
    assert restarted.send(message("d-2")).status == "delivered"
    assert len(file.read_text(encoding="utf-8").splitlines()) == 2


def test_unwritable_file_is_a_retryable_failure(tmp_path: Path) -> None:
    host = PluginHost(PluginsConfig())
    missing_dir = tmp_path / "no-such-dir" / "deliveries.jsonl"
    sender = host.create(
        "channel", ComponentEntry(name="archive", type="jsonl", path=str(missing_dir)), WHERE
    )
    result = sender.send(message("d-1"))
    assert (result.status, result.retryable) == ("failed", True)
    assert str(missing_dir) in result.detail


def test_bad_options_name_the_key(tmp_path: Path) -> None:
    host = PluginHost(PluginsConfig())
    with pytest.raises(ConfigError, match=r"cdp\.toml: channels\[0\]\.path"):
        host.create("channel", ComponentEntry(name="archive", type="jsonl"), WHERE)
    entry = ComponentEntry(
        name="archive", type="jsonl", path=str(tmp_path / "d.jsonl"), rotate="daily"
    )
    with pytest.raises(ConfigError, match=r"channels\[0\]\.rotate: unknown key"):
        host.create("channel", entry, WHERE)


def test_listed_by_the_cli(site_dir: Path, tmp_path: Path) -> None:
    # No CDP_* variables and an empty working directory: the default config, nothing blocked.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site_dir), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "cdp", "plugins", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if "│" in line}
    assert "0.1.0" in rows["jsonl"]
    assert "yes" in rows["jsonl"]
    assert "channel:jsonl" in rows["jsonl"]
    assert "log" in rows


def test_listed_by_graphql(client, api_keys) -> None:
    body = gql(client, api_keys["admin"], PLUGINS)
    assert body["_status"] == 200, body
    plugins = {p["name"]: p for p in body["data"]["plugins"]}
    assert plugins["jsonl"] == {
        "name": "jsonl",
        "version": "0.1.0",
        "enabled": True,
        "components": [{"kind": "channel", "name": "jsonl"}],
    }
    assert "log" in plugins


def test_blocked_plugin_is_listed_but_supplies_nothing() -> None:
    host = PluginHost(PluginsConfig(block=["jsonl"]))
    info = host.plugins["jsonl"]
    assert (info.enabled, info.components) == (False, [])
    assert host.plugins["log"].enabled
    with pytest.raises(ConfigError, match="no channel type 'jsonl' is installed"):
        host.component("channel", "jsonl")
