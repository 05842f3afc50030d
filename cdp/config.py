"""Loading and validating `cdp.toml`, `CDP_*` environment overrides and `{ env = "NAME" }` secrets.

Every error names where the value came from (the file or the environment variable), the key and
what is wrong, and loading stops at the first file that is wrong: the server never starts
half-configured.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cdp.errors import ConfigError
from cdp.identity.rules import IdentityConfig
from cdp.settings import EnvValue, Secret, Section

__all__ = ["Config", "EnvValue", "Secret", "Section", "load_config"]

DEFAULT_PATH = "cdp.toml"
ENV_PREFIX = "CDP_"


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class DatabaseConfig(Section):
    url: str = "sqlite:///cdp.db"
    auto_migrate: bool = False
    """Upgrade the schema when the server starts instead of refusing to run on an old one."""


class PluginsConfig(Section):
    enable: list[str] | None = None
    """Allow-list of plugin (entry point) names; None means every installed plugin."""
    block: list[str] = []
    on_error: Literal["fail", "skip"] = "fail"
    """What a plugin that fails to load does to start-up: stop it, or be reported and skipped."""


class GraphQLConfig(Section):
    max_depth: int = Field(12, ge=1)
    max_aliases: int = Field(20, ge=0)
    max_tokens: int = Field(4000, ge=1)


class ComponentEntry(BaseModel):
    """One `[[sources]]` / `[[channels]]` entry; its component type validates the other keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: str = Field(min_length=1)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TraitsConfig(Section):
    source_priority: dict[str, int] = {}
    """Per source (collect key name or connector name): a higher number's values are not
    overwritten by a lower one's, however much newer. Sources not named have priority 0."""
    types: dict[str, Literal["number", "string", "boolean", "datetime", "list"]] = {}
    """Declared trait types, for conditions on traits that no profile has yet (dotted paths
    for nested traits); other traits' types are read off the data."""


class SegmentsConfig(Section):
    sweep_seconds: int = Field(300, ge=1)
    """How often segments and computed traits with time windows are re-evaluated, so that
    memberships expire on time without new events."""
    recompute_seconds: int = Field(3600, ge=60)
    """How often every segment and computed trait is recomputed in bulk."""


class CapConfig(Section):
    """At most `max` offers presented per profile (and per channel / offer, if `per` says so)
    within `within` ("7d", "24h" …)."""

    per: Literal["profile", "channel", "offer"] = "profile"
    max: int = Field(ge=0)
    within: str = Field(pattern=r"^\d{1,6} ?(s|m|h|d|w)$")
    channel: str | None = None
    """Only for this channel (None: every channel)."""


class QuietHoursConfig(Section):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class SuppressionConfig(Section):
    negatives: int = Field(3, ge=1)
    """An offer is suppressed for a profile after this many DISMISS / REJECT responses …"""
    within: str = Field("30d", pattern=r"^\d{1,6} ?(s|m|h|d|w)$")
    """… within this period."""


class ChannelPolicyConfig(Section):
    """What `decideChannel` weighs for one outbound channel."""

    cost: float = Field(0.0, ge=0)
    reach: str | None = None
    """The identifier type a profile needs to be reachable (email, phone, a push token …)."""
    budget: int | None = Field(None, ge=0)
    """At most this many presentations on the channel per `budget_within`."""
    budget_within: str = Field("1d", pattern=r"^\d{1,6} ?(s|m|h|d|w)$")


class DecisionsConfig(Section):
    default_strategy: str = "arbitration"
    """A `[[strategies]]` name or a bundled strategy type (rules, arbitration, bandit)."""
    placements: dict[str, str] = {}
    """Placement → strategy (as `default_strategy`)."""
    holdout: float = Field(0.0, ge=0.0, le=0.5)
    """The share of profiles, chosen by a stable hash of their id, held out as a control group."""
    holdout_offer: str | None = None
    """The offer the control group gets instead of none (an offer id), if any."""
    consent: dict[str, str] = {}
    """Channel → consent purpose a profile must have granted to get offers on it."""
    caps: list[CapConfig] = []
    quiet_hours: dict[str, QuietHoursConfig] = {}
    """Channel → hours (in the profile's time zone) during which it gets no offers."""
    timezone_trait: str = "timezone"
    default_timezone: str = "UTC"
    suppression: SuppressionConfig = SuppressionConfig()
    channels: dict[str, ChannelPolicyConfig] = {}


class SchedulerConfig(Section):
    in_server: bool = True
    """`cdp serve` runs the schedules itself; false when `cdp worker` processes run them."""
    tick_seconds: float = Field(10.0, gt=0, le=3600)
    """How often due jobs are looked for: a job starts at most this late."""


class Config(Section):
    mode: Literal["production", "development"] = "production"
    """development turns on GraphiQL and introspection."""
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    plugins: PluginsConfig = PluginsConfig()
    graphql: GraphQLConfig = GraphQLConfig()
    identity: IdentityConfig = IdentityConfig()
    traits: TraitsConfig = TraitsConfig()
    segments: SegmentsConfig = SegmentsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    decisions: DecisionsConfig = DecisionsConfig()
    strategies: list[ComponentEntry] = []
    content_providers: list[ComponentEntry] = []
    """Content providers (offers and their content); none: one `catalogue` named "catalogue"."""
    sources: list[ComponentEntry] = []
    channels: list[ComponentEntry] = []
    models: list[ComponentEntry] = []
    """Enrichment models (`cdp.models.registry`): an enricher type, its options, a schedule."""

    @property
    def development(self) -> bool:
        return self.mode == "development"


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the config file (`path`, else `$CDP_CONFIG`, else ./cdp.toml) and the environment.

    A missing file at the default location means defaults; a missing file that was asked for by
    name is an error.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or "CDP_CONFIG" in environ
    file = Path(path if path is not None else environ.get("CDP_CONFIG", DEFAULT_PATH))
    raw: dict[str, Any] = {}
    if file.exists():
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot be read: {exc}") from None
    elif explicit:
        raise ConfigError(f"{file}: config file not found")

    raw = _resolve_env_refs(raw, environ, str(file), "")
    overridden = _apply_env_overrides(raw, environ)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = _dotted(error["loc"])
        origin = overridden.get(key, str(file))
        raise ConfigError(f"{origin}: {key}: {_describe(error)}") from None


def _resolve_env_refs(value: Any, environ: Mapping[str, str], file: str, key: str) -> Any:
    """Replace every `{ env = "NAME" }` table with the variable's value, as an EnvValue."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            name = value["env"]
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{file}: {key}: env must name an environment variable")
            if name not in environ:
                raise ConfigError(f"{file}: {key}: environment variable {name} is not set")
            return EnvValue(environ[name])
        return {
            k: _resolve_env_refs(v, environ, file, f"{key}.{k}" if key else k)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env_refs(v, environ, file, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Apply CDP_<FIELD> and CDP_<SECTION>_<FIELD>; returns {dotted key: variable name}."""
    applied: dict[str, str] = {}
    for field, info in Config.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, Section):
            for sub, sub_info in section.model_fields.items():
                var = f"{ENV_PREFIX}{field}_{sub}".upper()
                if var in environ:
                    target = raw.setdefault(field, {})
                    if not isinstance(target, dict):
                        raise ConfigError(f"environment variable {var}: {field} is not a table")
                    target[sub] = _env_scalar(environ[var], sub_info.annotation)
                    applied[f"{field}.{sub}"] = f"environment variable {var}"
        elif get_origin(section) is not list and f"{ENV_PREFIX}{field}".upper() in environ:
            var = f"{ENV_PREFIX}{field}".upper()
            raw[field] = _env_scalar(environ[var], section)
            applied[field] = f"environment variable {var}"
    return applied


def _env_scalar(text: str, annotation: Any) -> Any:
    if "list" in str(annotation):
        return [EnvValue(part.strip()) for part in text.split(",") if part.strip()]
    return EnvValue(text)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    if isinstance(got, EnvValue | SecretStr):
        shown = ""  # never echo a value that may be a secret
    return f"{error['msg']}{shown}"
