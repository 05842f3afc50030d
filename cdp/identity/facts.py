"""What a stored message says about the person: their traits, consent and group traits.

Read by identity resolution as events arrive, and again when a split replays a profile's events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def person_traits(payload: Mapping[str, Any]) -> dict[str, Any]:
    """identify's `traits`, and any message's `context.traits`."""
    found: dict[str, Any] = {}
    context = payload.get("context")
    if isinstance(context, dict) and isinstance(context.get("traits"), dict):
        found.update(context["traits"])
    if payload.get("type") == "identify" and isinstance(payload.get("traits"), dict):
        found.update(payload["traits"])
    return found


def consent_preferences(payload: Mapping[str, Any]) -> dict[str, bool]:
    """Segment's consent shape: `context.consent.categoryPreferences` = {category: bool}."""
    context = payload.get("context")
    consent = context.get("consent") if isinstance(context, dict) else None
    prefs = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(prefs, dict):
        return {}
    return {str(k)[:128]: v for k, v in prefs.items() if isinstance(v, bool)}


def group_traits(payload: Mapping[str, Any]) -> dict[str, Any]:
    traits = payload.get("traits") if payload.get("type") == "group" else None
    return dict(traits) if isinstance(traits, dict) else {}
