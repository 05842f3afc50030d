"""A guard on segment and computed-trait definitions, for what the condition
language accepts but the database cannot hold or bind: NUL characters and unpaired surrogates in
strings (PostgreSQL refuses them), integers beyond 64 bits (SQLite cannot bind them), and sheer
size. Each refusal names the path of the fault, like the condition language's own errors."""

from __future__ import annotations

import json
from typing import Any

from cdp.errors import UserError

MAX_CHARS = 256 * 1024
"""Characters of strings (keys included) a definition may hold in all."""
MAX_VALUES = 300_000
"""JSON values a definition may hold in all (256 conditions of 1000 `in` values, and more)."""
INT_RANGE = range(-(2**63), 2**63)


def check_storable(value: Any, path: str = "definition") -> None:
    total = values = 0
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, at = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise UserError(f"{path}: more than {MAX_VALUES} values in all")
        if isinstance(node, dict):
            for key, child in node.items():
                sub = f"{at}.{_shown(key)}"
                total += _check_string(key, sub)
                stack.append((child, sub))
        elif isinstance(node, list):
            stack.extend((child, f"{at}[{i}]") for i, child in reversed(list(enumerate(node))))
        elif isinstance(node, str):
            total += _check_string(node, at)
        elif isinstance(node, int) and not isinstance(node, bool) and node not in INT_RANGE:
            raise UserError(f"{at}: integers are limited to 64 bits (±9.2e18)")
        if total > MAX_CHARS:
            raise UserError(f"{path}: longer than {MAX_CHARS} characters in all")


def _check_string(text: str, at: str) -> int:
    if "\x00" in text:
        raise UserError(f"{at}: contains a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise UserError(f"{at}: contains an unpaired surrogate") from None
    return len(text)


def _shown(key: str) -> str:
    """A key as shown in a path: printable and short (it may be the culprit)."""
    text = key if key.isprintable() else json.dumps(key)[1:-1]
    return text if len(text) <= 64 else text[:64] + "…"
