"""The `[[models]]` entries: the keys the core reads, validated here, and the enricher's own.

```toml
[[models]]
name = "churn"              # the model's name; bundled enrichers name their score after it
type = "churn"              # the enricher (a component registered by a plugin)
schedule = "0 3 * * *"      # core: train then score on this schedule (optional)
stale_after = "1d"          # core: older scores are recomputed when a profile is read
horizon = "30d"             # the enricher's own options, validated by its `Options`
```

Every error names the file, the entry and the key (`cdp.toml: models[0].horizon: …`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from cdp.components import Enricher
from cdp.config import ComponentEntry, Config
from cdp.errors import ConfigError, NotFoundError
from cdp.models.spec import Duration, Output, Target
from cdp.plugins import PluginHost
from cdp.scheduler import Schedule

CORE_KEYS = ("schedule", "stale_after")
"""Keys every `[[models]]` entry may have, read by the core; an enricher's `Options` never sees
them (so must not use their names)."""


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str
    schedule: str | None = None
    """When the scheduler trains the model and then scores every profile; `cdp models train`
    and `cdp models score` run regardless."""
    stale_after: Duration = timedelta(days=1)
    """A profile's score older than this (or written by another version than the active one)
    is recomputed when the profile is read."""

    @field_validator("schedule")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Schedule.parse(value)
            except ValueError as exc:
                raise PydanticCustomError("schedule", "{reason}", {"reason": str(exc)}) from None
        return value


@dataclass(frozen=True)
class Model:
    """A configured model: its entry and the enricher instance that serves it."""

    spec: ModelSpec
    enricher: Enricher

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def outputs(self) -> list[Output]:
        return list(self.enricher.outputs())

    @property
    def target(self) -> Target | None:
        return self.enricher.target()


def load_models(config: Config, plugins: PluginHost, file: str = "cdp.toml") -> list[Model]:
    """Validate every `[[models]]` entry and create its enricher; the first fault raises a
    ConfigError naming the file, the entry and the key."""
    models: list[Model] = []
    writers: dict[str, str] = {}  # score name → the model that writes it
    for index, entry in enumerate(config.models):
        where = f"{file}: models[{index}]"
        if any(m.name == entry.name for m in models):
            raise ConfigError(f"{where}.name: another model is named {entry.name!r}")
        spec = _core_spec(entry, where)
        own = {k: v for k, v in entry.options().items() if k not in CORE_KEYS}
        enricher = plugins.create(
            "enricher", ComponentEntry(name=entry.name, type=entry.type, **own), where
        )
        assert isinstance(enricher, Enricher)
        enricher.model = entry.name
        try:
            outputs = list(enricher.outputs())
            features = list(enricher.features())
            target = enricher.target()
        except ValueError as exc:  # a declaration the options made invalid
            raise ConfigError(f"{where}: {exc}") from None
        problem = _contract_problem(enricher, outputs, len(features), target)
        if problem:
            raise ConfigError(f"{where}.type: enricher {entry.type!r} {problem}")
        for output in outputs:
            if output.name in writers:
                raise ConfigError(
                    f"{where}.name: model {writers[output.name]!r} already writes the score "
                    f"{output.name!r}; name this model differently"
                )
            writers[output.name] = entry.name
        models.append(Model(spec, enricher))
    return models


def find_model(config: Config, plugins: PluginHost, name: str, file: str = "cdp.toml") -> Model:
    for model in load_models(config, plugins, file):
        if model.name == name:
            return model
    known = ", ".join(entry.name for entry in config.models) or "none"
    raise NotFoundError(f"no model is named {name!r} (configured: {known})")


def _core_spec(entry: ComponentEntry, where: str) -> ModelSpec:
    options = entry.options()
    core = {key: options[key] for key in CORE_KEYS if key in options}
    try:
        return ModelSpec.model_validate({"name": entry.name, "type": entry.type, **core})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{where}.{key}: {error['msg']}") from None


def _contract_problem(
    enricher: Enricher, outputs: list[Output], features: int, target: Target | None
) -> str | None:
    """What a (vendor's) enricher declares wrongly, before anything is trained with it."""
    task = getattr(enricher, "task", None)
    if task not in ("classification", "regression", "clustering"):
        return f"declares no valid task (got {task!r})"
    if not outputs:
        return "declares no outputs"
    if not features:
        return "declares no features"
    if (task == "clustering") != (target is None):
        return "must declare a target unless it clusters (and none if it does)"
    if task == "classification" and target is not None and target.aggregate not in ("any", "none"):
        return 'classifies, so its target aggregate must be "any" or "none"'
    if task == "regression" and target is not None and target.aggregate not in ("count", "sum"):
        return 'regresses, so its target aggregate must be "count" or "sum"'
    return None
