"""`personas` enricher: RFM features and k-means clusters with names read off their centres.

```toml
[[models]]
name = "persona"
type = "personas"
clusters = 4
lookback = "365d"
```

Each profile gets the label `persona` (e.g. "recent frequent high spenders") and, so that the
profile shows why, its RFM features as scores: `persona_recency_days`, `persona_frequency`,
`persona_monetary`.

Names come from the cluster centres in the features' own units: each centre is compared with the
mean of the centres on each of recency, frequency and monetary value, so a cluster that buys more
often than the others is "frequent", one whose last purchase is older is "lapsed", and so on;
a centre with no purchases is "non-buyers". They are derived again from the model at every
scoring, never stored apart from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cdp_plugins.commerce_features import rfm_features
from pydantic import BaseModel, ConfigDict, Field

from cdp.components import Enricher, Feature, Output
from cdp.hookspecs import hookimpl
from cdp.models.spec import Duration

RECENCY, FREQUENCY, MONETARY = 0, 1, 2


class PersonaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clusters: int = Field(4, ge=2, le=12)
    purchase_event: str = Field("Order Completed", min_length=1)
    value_property: str = Field("properties.total", min_length=1)
    lookback: Duration = timedelta(days=365)
    score: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    """The label's name (and the prefix of the feature scores); default: the model's name."""


class Personas(Enricher):
    name = "personas"
    Options = PersonaOptions
    task = "clustering"
    options: PersonaOptions

    @property
    def _prefix(self) -> str:
        return self.options.score or self.model

    def outputs(self) -> list[Output]:
        p = self._prefix
        return [
            Output(p, "label", "persona, named from its cluster's centre"),
            Output(f"{p}_recency_days", description="days since the last purchase"),
            Output(f"{p}_frequency", description="purchases in the lookback"),
            Output(f"{p}_monetary", description="spend in the lookback"),
        ]

    def features(self) -> list[Feature]:
        o = self.options
        return rfm_features(o.purchase_event, o.value_property, o.lookback)

    def estimator(self) -> Any:
        from sklearn.cluster import KMeans  # here: plugins load at every start
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import PowerTransformer

        # Yeo-Johnson tames the long tails of frequency and spend (and accepts refunds' negative
        # sums) and standardises, so no one feature's units dominate the distances.
        return Pipeline(
            [
                ("scale", PowerTransformer(method="yeo-johnson")),
                ("cluster", KMeans(self.options.clusters, n_init=10, random_state=0)),
            ]
        )

    def score(self, model: Any, features: Any) -> Mapping[str, Any]:
        names = cluster_names(model)
        assigned = model.predict(features)
        p = self._prefix
        return {
            p: [names[c] for c in assigned],
            f"{p}_recency_days": features[:, RECENCY],
            f"{p}_frequency": features[:, FREQUENCY],
            f"{p}_monetary": features[:, MONETARY],
        }


def cluster_names(model: Any) -> list[str]:
    """A readable, distinct name per cluster, from its centre in recency/frequency/monetary."""
    centres = model[:-1].inverse_transform(model[-1].cluster_centers_)
    buyers = centres[centres[:, FREQUENCY] >= 0.5]
    # Compared among buyers only: a cluster of non-buyers (recency = the whole lookback, no
    # spend) would otherwise make every buyer look recent.
    mean = (buyers if len(buyers) else centres).mean(axis=0)
    names: list[str] = []
    for centre in centres:
        if centre[FREQUENCY] < 0.5:
            name = "non-buyers"
        else:
            recency = "recent" if centre[RECENCY] <= mean[RECENCY] else "lapsed"
            frequency = "frequent" if centre[FREQUENCY] >= mean[FREQUENCY] else "occasional"
            spend = "high spenders" if centre[MONETARY] >= mean[MONETARY] else "low spenders"
            name = f"{recency} {frequency} {spend}"
        names.append(name)
    # Two clusters can read alike (they differ by degree): number the repeats.
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1 or names.count(name) > 1:
            names[i] = f"{name} {seen[name]}"
    return names


@hookimpl
def register_enrichers() -> list[type[Enricher]]:
    return [Personas]
