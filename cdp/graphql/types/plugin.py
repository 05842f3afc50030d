from __future__ import annotations

import strawberry

from cdp.plugins import PluginInfo


@strawberry.type(description="A component a plugin registered.")
class Component:
    kind: str
    name: str


@strawberry.type(description="An installed plugin, loaded or not.")
class Plugin:
    name: str
    version: str
    enabled: bool
    error: str | None
    kinds: list[str]
    components: list[Component]

    @classmethod
    def from_info(cls, info: PluginInfo) -> Plugin:
        return cls(
            name=info.name,
            version=info.version,
            enabled=info.enabled,
            error=info.error,
            kinds=info.kinds,
            components=[Component(kind=k, name=n) for k, n in info.components],
        )
