"""The `[[sources]]` entries: the keys the core reads, validated here, and the connector's own.

An entry holds three groups of keys:

- `name` and `type` (every component entry has them);
- the core keys, `CORE_KEYS`: what the records are (`kind`), how they become messages
  (`mapping`) and when to sync (`schedule`), the same for every connector;
- everything else, which goes to the connector and is validated by its `Options` model.

So a connector's `Options` must not use a core key's name; it never sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from cdp.components import SourceConnector
from cdp.config import ComponentEntry, Config
from cdp.errors import ConfigError
from cdp.plugins import PluginHost
from cdp.scheduler import Schedule

CORE_KEYS = ("kind", "mapping", "schedule")
FieldName = Annotated[str, Field(min_length=1)]


class MappingSpec(BaseModel):
    """Which record field feeds which part of the message; values are field names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifiers: dict[str, FieldName] = {}
    """Identifier type (`user_id`, `email`, `phone`, a custom type …) → field."""
    traits: dict[str, FieldName] = {}
    consents: dict[str, FieldName] = {}
    """Consent purpose → field holding yes/no, true/false, 1/0, granted/denied."""
    event: str | None = Field(None, min_length=1)
    """events: the one event name every record gets …"""
    event_field: FieldName | None = None
    """… or the field holding each record's event name."""
    timestamp: FieldName | None = None
    """Field with when it happened (ISO-8601 or epoch seconds); unmapped: when imported."""
    properties: dict[str, FieldName] = {}
    message_id: FieldName | None = None
    """Field with a unique record id; unmapped: the connector's record key."""


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str
    kind: Literal["profiles", "events"]
    mapping: MappingSpec
    schedule: str | None = None
    """When the scheduler syncs: "every 1h", or cron fields in UTC ("0 3 * * *");
    `cdp sources sync` runs regardless."""

    @field_validator("schedule")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Schedule.parse(value)
            except ValueError as exc:  # a custom error: no "Value error, " prefix
                raise PydanticCustomError("schedule", "{reason}", {"reason": str(exc)}) from None
        return value

    @property
    def interval(self) -> timedelta | None:
        """The interval of an "every …" schedule; None for cron or no schedule."""
        return Schedule.parse(self.schedule).interval if self.schedule else None


@dataclass(frozen=True)
class Source:
    spec: SourceSpec
    connector: SourceConnector

    @property
    def name(self) -> str:
        return self.spec.name


def load_sources(config: Config, plugins: PluginHost, file: str = "cdp.toml") -> list[Source]:
    """Validate every `[[sources]]` entry and create its connector; the first fault raises a
    ConfigError naming the file, the entry, the key and the source."""
    sources: list[Source] = []
    seen: set[str] = set()
    for index, entry in enumerate(config.sources):
        where = f"{file}: sources[{index}]"
        suffix = f" (source {entry.name!r})"
        if entry.name in seen:
            raise ConfigError(f"{where}.name: another source is named {entry.name!r}")
        seen.add(entry.name)
        spec = _core_spec(entry, config, where, suffix)
        connector_keys = {k: v for k, v in entry.options().items() if k not in CORE_KEYS}
        connector_entry = ComponentEntry(name=entry.name, type=entry.type, **connector_keys)
        try:
            connector = plugins.create("source", connector_entry, where)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{suffix}") from None
        assert isinstance(connector, SourceConnector)
        sources.append(Source(spec, connector))
    return sources


def find_source(config: Config, plugins: PluginHost, name: str, file: str = "cdp.toml") -> Source:
    for source in load_sources(config, plugins, file):
        if source.name == name:
            return source
    known = ", ".join(entry.name for entry in config.sources) or "none"
    raise ConfigError(f"{file}: no source is named {name!r} (configured: {known})")


def _core_spec(entry: ComponentEntry, config: Config, where: str, suffix: str) -> SourceSpec:
    options = entry.options()
    core = {key: options[key] for key in CORE_KEYS if key in options}
    try:
        spec = SourceSpec.model_validate({"name": entry.name, "type": entry.type, **core})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{where}.{key}: {_describe(error)}{suffix}") from None
    problem = _mapping_problem(spec, config)
    if problem is not None:
        key, message = problem
        raise ConfigError(f"{where}.mapping.{key}: {message}{suffix}")
    return spec


def _mapping_problem(spec: SourceSpec, config: Config) -> tuple[str, str] | None:
    """(key under `mapping`, what is wrong) for what the field types alone cannot check."""
    mapping = spec.mapping
    if not mapping.identifiers:
        return "identifiers", 'map at least one identifier, e.g. { email = "Email" }'
    types = config.identity.resolved_types()
    for type_name in mapping.identifiers:
        if type_name not in types:
            known = ", ".join(sorted(name for name, t in types.items() if not t.shared))
            return f"identifiers.{type_name}", f"unknown identifier type (known: {known})"
        if types[type_name].shared:
            return f"identifiers.{type_name}", "is shared by many people; it cannot identify one"
    if spec.kind == "profiles":
        for key in ("event", "event_field"):
            if getattr(mapping, key) is not None:
                return key, 'only for kind = "events"'
        if mapping.properties:
            return "properties", 'only for kind = "events"; map profile fields under traits'
    elif (mapping.event is None) == (mapping.event_field is None):
        return "event", "give either event (one name for every record) or event_field"
    return None


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"])
