"""The building blocks of config models: sections that refuse unknown keys, and secrets.

Kept apart from `cdp.config` so that modules owning a config section (identity rules, component
options) can define it without importing the whole config.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr


class EnvValue(str):
    """A string that came from the environment (a `{ env = ... }` reference or a `CDP_*` override).

    Secrets must be of this kind: a literal secret in the config file is refused.
    """


def _secret_from_env(value: Any) -> Any:
    if isinstance(value, EnvValue):
        return value
    if isinstance(value, str):
        raise ValueError('secrets are not kept in config files; write { env = "VARIABLE_NAME" }')
    return value


Secret = Annotated[SecretStr, BeforeValidator(_secret_from_env)]
"""A config value that must come from the environment; component configs use it for passwords."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
