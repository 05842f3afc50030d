"""`catalogue` content provider: offers from its config entry and those admins save through
GraphQL (`upsertOffer`), with content rendered by the jinja2 sandbox of
`cdp.decisions.templates`.

```toml
[[content_providers]]
name = "catalogue"
type = "catalogue"

[[content_providers.offers]]
key = "welcome"
name = "Welcome discount"
value = 10
content.email.subject = "Hi {{ profile.traits.first_name | default('there') }}"
content.email.html = "<p>10 off, {{ profile.traits.first_name | default('friend') }}</p>"

[[content_providers.offers]]
key = "gold"
name = "Gold upgrade"
value = 120
eligibility = { trait = "plan", op = "=", value = "pro" }
content."*".title = "Gold upgrade"
```

(`offers = [{ key = "welcome", … }]` works too; TOML wants each inline table on one line.)

A saved offer with the key of a config offer replaces it. Without any `[[content_providers]]`
entry the core runs one catalogue named "catalogue", so saved offers work with no config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from cdp.components import ContentProvider
from cdp.decisions.offers import STRUCTURAL, parse_offer
from cdp.decisions.templates import render_content, variables
from cdp.errors import UserError
from cdp.hookspecs import hookimpl


class CatalogueOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    offers: list[dict[str, Any]] = []
    """Offer definitions (see cdp.decisions.offers), checked when the server starts."""


class Catalogue(ContentProvider):
    name = "catalogue"
    Options = CatalogueOptions
    options: CatalogueOptions

    def __init__(self, options: CatalogueOptions) -> None:
        super().__init__(options)
        keys: set[str] = set()
        for index, raw in enumerate(options.offers):
            # Their shape now (the core reports "cdp.toml: content_providers[0].offers[1]…");
            # what their conditions name is checked against the store when they are loaded.
            spec = parse_offer(self.name, raw, STRUCTURAL, f"offers[{index}]")
            if spec.key in keys:
                raise UserError(f"offers[{index}].key: another offer has the key {spec.key!r}")
            keys.add(spec.key)

    def offers(self, stored: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        by_key: dict[Any, Mapping[str, Any]] = {raw["key"]: raw for raw in self.options.offers}
        for raw in stored:
            key = raw.get("key") if isinstance(raw, Mapping) else None
            if isinstance(key, str):
                by_key[key] = raw  # a saved offer replaces the config one
        return list(by_key.values())

    def render(
        self, offer: Mapping[str, Any], profile: Mapping[str, Any], channel: str
    ) -> Mapping[str, str]:
        content = offer.get("content")
        content = content if isinstance(content, Mapping) else {}
        used = channel if channel in content else "*"
        fields = content.get(used)
        if not isinstance(fields, Mapping):
            raise UserError(f"offer {offer.get('id')!r} has no content for the {channel} channel")
        return render_content(fields, variables(offer, profile), f"content.{used}")


@hookimpl
def register_content_providers() -> list[type[ContentProvider]]:
    return [Catalogue]
