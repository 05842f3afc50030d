"""The plugin host: an app-owned pluggy manager fed from the `cdp` entry-point group.

Bundled plugins (`plugins/` in the repository) arrive through the same entry points as a vendor's;
the core imports none of them by name.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy
from pydantic import ValidationError

from cdp import hookspecs
from cdp.components import KINDS, Component
from cdp.config import ComponentEntry, PluginsConfig
from cdp.errors import ConfigError, PluginError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cdp"
REGISTRATION_HOOKS = {
    "source": "register_sources",
    "enricher": "register_enrichers",
    "strategy": "register_strategies",
    "content_provider": "register_content_providers",
    "channel": "register_channels",
}


@dataclass
class PluginInfo:
    name: str
    version: str
    enabled: bool
    error: str | None = None
    components: list[tuple[str, str]] = field(default_factory=list)
    """(kind, type name) pairs."""

    @property
    def kinds(self) -> list[str]:
        return sorted({kind for kind, _ in self.components})


class PluginHost:
    """Loads plugins once, validates them, and indexes the components they register."""

    def __init__(
        self, config: PluginsConfig, extra: Iterable[tuple[str, object]] = (), discover: bool = True
    ) -> None:
        """`extra`: (name, plugin object) pairs registered beside the discovered ones (tests)."""
        self.config = config
        self.pm = pluggy.PluginManager("cdp")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, tuple[type[Component], str]]] = {k: {} for k in KINDS}
        candidates: list[tuple[str, str, Callable[[], object]]] = []
        if discover:
            candidates += [
                (ep.name, ep.dist.version if ep.dist else "", ep.load)
                for ep in entry_points(group=ENTRY_POINT_GROUP)
            ]
        candidates += [(name, "", lambda obj=obj: obj) for name, obj in extra]
        self._check_allow_list([name for name, _, _ in candidates])
        for name, version, load in candidates:
            self._load(name, version, load)

    def _check_allow_list(self, installed: list[str]) -> None:
        for name in self.config.enable or []:
            if name not in installed:
                raise ConfigError(
                    f"plugins.enable: no installed plugin is named {name!r} "
                    f"(installed: {', '.join(sorted(installed)) or 'none'})"
                )

    def _load(self, name: str, version: str, load: Callable[[], object]) -> None:
        if name in self.plugins:
            raise PluginError(f"plugin {name!r}: two installed plugins use that name")
        info = PluginInfo(name=name, version=version, enabled=False)
        self.plugins[name] = info
        if name in self.config.block or (
            self.config.enable is not None and name not in self.config.enable
        ):
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=name)
            try:
                self.pm.check_pending()
                found = self._collect_components(name, plugin)
            except Exception:
                self.pm.unregister(name=name)
                raise
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            message = f"plugin {name!r} failed to load: {info.error}"
            if self.config.on_error == "fail":
                raise PluginError(message) from exc
            log.error(message)
            return
        for kind, cls in found:
            self.components[kind][cls.name] = (cls, name)
            info.components.append((kind, cls.name))
        info.enabled = True

    def _collect_components(
        self, plugin_name: str, plugin: object
    ) -> list[tuple[str, type[Component]]]:
        found: list[tuple[str, type[Component]]] = []
        for kind, hook_name in REGISTRATION_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                for cls in impl.function() or ():
                    self._validate_component(kind, cls, found)
                    found.append((kind, cls))
        return found

    def _validate_component(
        self, kind: str, cls: Any, pending: list[tuple[str, type[Component]]]
    ) -> None:
        base = KINDS[kind]
        hook = REGISTRATION_HOOKS[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"{hook} returned {cls!r}, which is not a subclass of {base.__name__}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{hook}: {cls.__name__} has no `name`")
        if inspect.isabstract(cls):
            raise PluginError(f"{hook}: {cls.__name__} leaves abstract methods unimplemented")
        if name in self.components[kind] or any(k == kind and c.name == name for k, c in pending):
            owner = self.components[kind].get(name, (None, "the same plugin"))[1]
            raise PluginError(f"{kind} type {name!r} is already registered by plugin {owner!r}")

    # --- use ----------------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def component(self, kind: str, type_name: str) -> type[Component]:
        try:
            return self.components[kind][type_name][0]
        except KeyError:
            known = ", ".join(sorted(self.components[kind])) or "none"
            raise ConfigError(
                f"no {kind} type {type_name!r} is installed (installed: {known})"
            ) from None

    def create(self, kind: str, entry: ComponentEntry, where: str) -> Component:
        """Instantiate the component an `[[sources]]`/`[[channels]]` entry describes.

        `where` names the entry for errors, e.g. "cdp.toml: channels[0]".
        """
        try:
            cls = self.component(kind, entry.type)
        except ConfigError as exc:
            raise ConfigError(f"{where}.type: {exc}") from None
        try:
            options = cls.Options.model_validate(entry.options())
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise ConfigError(f"{where}.{key}: {msg}") from None
        return cls(options)

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; one plugin's failure is logged, not spread."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception:
                log.exception("plugin %r failed in hook %s", impl.plugin_name, hook_name)
