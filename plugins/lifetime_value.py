"""`lifetime_value` enricher: the expected value of a profile's purchases in the next window.

```toml
[[models]]
name = "ltv_90d"
type = "lifetime_value"
horizon = "90d"
purchase_event = "Order Completed"
value_property = "properties.total"
```

The label is the sum of `value_property` over the purchases in [cut-off, cut-off + horizon);
features are the profile's activity and purchases before the cut-off. A gradient-boosted
regression (squared error: it estimates the mean, which is what an expected value is) learns
it; predictions are floored at 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from cdp_plugins.commerce_features import (
    HGB_TREES,
    CommerceOptions,
    behaviour_features,
    purchases,
)

from cdp.components import Enricher, Feature, Output, Target
from cdp.hookspecs import hookimpl


class LifetimeValue(Enricher):
    name = "lifetime_value"
    Options = CommerceOptions
    task = "regression"
    trusted_types = (HGB_TREES,)
    options: CommerceOptions

    def outputs(self) -> list[Output]:
        days = self.options.horizon.days
        return [Output(self.options.score or self.model, description=f"expected spend in {days}d")]

    def features(self) -> list[Feature]:
        return behaviour_features(self.options)

    def target(self) -> Target:
        o = self.options
        return Target("sum", o.horizon, purchases(o), property=o.value_property)

    def estimator(self) -> Any:
        from sklearn.ensemble import (
            HistGradientBoostingRegressor,  # here: plugins load at every start
        )

        return HistGradientBoostingRegressor(
            learning_rate=0.1, max_iter=100, max_leaf_nodes=15, l2_regularization=1.0,
            random_state=0,
        )  # fmt: skip

    def score(self, model: Any, features: Any) -> Mapping[str, Any]:
        [output] = self.outputs()
        return {output.name: np.maximum(model.predict(features), 0.0)}


@hookimpl
def register_enrichers() -> list[type[Enricher]]:
    return [LifetimeValue]
