"""The configured models, and their state and versions as stored: what listings show.

Kept apart from `cdp.models.service` so that readers (GraphQL's `models`, `cdp models list`)
do not import scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cdp.db.models import ModelState, ModelVersion
from cdp.models import store
from cdp.models.registry import Model, find_model, load_models
from cdp.runtime import Runtime

REGISTRY_KEY = "models.registry"


def configured(runtime: Runtime) -> list[Model]:
    """The `[[models]]` of the runtime's config, validated once per runtime."""
    models: list[Model] | None = runtime.caches.get(REGISTRY_KEY)
    if models is None:
        models = runtime.caches[REGISTRY_KEY] = load_models(runtime.config, runtime.plugins)
    return models


def get_model(runtime: Runtime, name: str) -> Model:
    for model in configured(runtime):
        if model.name == name:
            return model
    return find_model(runtime.config, runtime.plugins, name)  # raises, naming the known ones


@dataclass(frozen=True)
class Overview:
    model: Model
    state: ModelState | None
    versions: list[ModelVersion]
    """Oldest first, without artefacts."""

    @property
    def active(self) -> ModelVersion | None:
        number = self.state.active_version if self.state else None
        return next((v for v in self.versions if v.version == number), None)


def overview(runtime: Runtime, names: Sequence[str] | None = None) -> list[Overview]:
    """Every configured model (or those named) with its state and versions: two queries."""
    models = [m for m in configured(runtime) if names is None or m.name in names]
    with runtime.sessions() as session:
        states = store.states(session)
        versions = store.versions(session)
    return [
        Overview(m, states.get(m.name), [v for v in versions if v.model == m.name]) for m in models
    ]
