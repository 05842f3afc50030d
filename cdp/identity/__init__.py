"""Identity resolution: identifier rules (types, normalisation, limits, blocked values)."""
