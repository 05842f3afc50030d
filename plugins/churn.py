"""`churn` enricher: the probability that a profile shows no activity in the next window.

```toml
[[models]]
name = "churn"                       # the score's name: {"score": "churn", "op": ">", "value": 0.7}
type = "churn"
activity_events = ["Order Completed", "Product Viewed"]   # default: every track/page/screen
horizon = "30d"
```

The label is 1 for a profile with no activity event in [cut-off, cut-off + horizon); features
are its activity and purchases before the cut-off (`commerce_features`).
"""

from __future__ import annotations

from typing import Any

from cdp_plugins.commerce_features import (
    HGB_TREES,
    CommerceOptions,
    activity,
    behaviour_features,
)

from cdp.components import Enricher, Feature, Output, Target
from cdp.hookspecs import hookimpl


class Churn(Enricher):
    name = "churn"
    Options = CommerceOptions
    task = "classification"
    trusted_types = (HGB_TREES,)
    options: CommerceOptions

    def outputs(self) -> list[Output]:
        days = self.options.horizon.days
        return [Output(self.options.score or self.model, description=f"P(no activity in {days}d)")]

    def features(self) -> list[Feature]:
        return behaviour_features(self.options)

    def target(self) -> Target:
        return Target("none", self.options.horizon, activity(self.options))

    def estimator(self) -> Any:
        from sklearn.ensemble import (
            HistGradientBoostingClassifier,  # here: plugins load at every start
        )

        return HistGradientBoostingClassifier(
            learning_rate=0.1, max_iter=100, max_leaf_nodes=15, l2_regularization=1.0,
            random_state=0,
        )  # fmt: skip


@hookimpl
def register_enrichers() -> list[type[Enricher]]:
    return [Churn]
