"""Every hook a plugin can implement, with its exact signature.

Plugins are modules or objects registered through the `cdp` entry-point group, with functions
marked `@cdp.hookimpl`. Registration hooks return component classes and do no I/O; lifecycle
hooks observe what the core did, after it is committed, and must not raise (an exception is
logged and the core carries on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from cdp.components import (
        ChannelSender,
        ContentProvider,
        DecisionStrategy,
        Enricher,
        SourceConnector,
    )
    from cdp.runtime import Runtime

hookspec = pluggy.HookspecMarker("cdp")
hookimpl = pluggy.HookimplMarker("cdp")


# --- registration: return component classes --------------------------------------------------


@hookspec
def register_sources() -> Sequence[type[SourceConnector]]:
    """Source connector classes this plugin supplies."""


@hookspec
def register_enrichers() -> Sequence[type[Enricher]]:
    """Enrichment model classes this plugin supplies."""


@hookspec
def register_strategies() -> Sequence[type[DecisionStrategy]]:
    """Decision strategy classes this plugin supplies."""


@hookspec
def register_content_providers() -> Sequence[type[ContentProvider]]:
    """Content provider classes this plugin supplies."""


@hookspec
def register_channels() -> Sequence[type[ChannelSender]]:
    """Channel sender classes this plugin supplies."""


# --- lifecycle: observe ---------------------------------------------------------------------------


@hookspec
def startup(runtime: Runtime) -> None:
    """The server or worker has loaded its config and plugins and is about to serve."""


@hookspec
def event_ingested(event: Mapping[str, Any], profile_id: str) -> None:
    """An event was stored and applied to the profile `profile_id`."""


@hookspec
def profiles_merged(survivor_id: str, merged_ids: Sequence[str], reason: str) -> None:
    """The profiles `merged_ids` were merged into `survivor_id`."""


@hookspec
def segment_membership_changed(profile_id: str, segment_key: str, entered: bool) -> None:
    """The profile entered (`entered=True`) or left the segment `segment_key`."""
