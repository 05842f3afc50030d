"""Checks on decoded JSON that the store needs: size, depth, finite numbers, no NUL or unpaired
surrogates; and the field paths errors are reported under."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from cdp.collect.errors import _Errors
from cdp.collect.limits import (
    _SAFE_SOURCE_BYTES,
    _SUSPECT_ESCAPES,
    _TOO_DEEP,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_SEGMENT_CHARS,
)


class _Source:
    """A body's decoded text, so that each message can be vetted on its own slice of it."""

    __slots__ = ("ascii", "spans", "suspect", "text")

    def __init__(self, text: str, spans: list[tuple[int, int]] | None) -> None:
        self.text = text
        self.spans = spans
        self.ascii = text.isascii()
        # A one-byte search first: most bodies hold no escape at all.
        self.suspect = "\\" in text and any(e in text for e in _SUSPECT_ESCAPES)

    def vetted(self, item: Any, index: int) -> bool:
        """Whether `item` is an object whose text rules out what `_check_json` looks for.

        Those checks re-serialise the message; this only looks at its text.
        """
        if self.spans is None or not isinstance(item, dict):
            return False
        start, end = self.spans[index]
        text = self.text
        size = end - start if self.ascii else len(text[start:end].encode())
        return (
            size <= _SAFE_SOURCE_BYTES
            # Depth is at most the number of containers.
            and text.count("{", start, end) + text.count("[", start, end) <= MAX_DEPTH
            and not (self.suspect and any(text.find(e, start, end) >= 0 for e in _SUSPECT_ESCAPES))
        )


def _check_json(value: Any, errors: _Errors, field: str, level: int = 1) -> None:
    """Size, depth and contents the store cannot hold, measured on the compact re-serialisation.

    `level` is where `value` sits in a message: 1 for the message itself.
    """
    whole = field or "(message)"
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        errors.add(whole, _TOO_DEEP)
        return
    except ValueError:  # NaN or infinity: only from callers whose floats were not decoded here
        errors.add(_where(value, _is_nonfinite, field), "is a number out of range")
        return
    except TypeError:  # only reachable by callers passing objects that did not come from JSON
        errors.add(whole, "holds a value that is not JSON")
        return
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            errors.add(_where(value, _has_surrogate, field), "contains an unpaired surrogate")
            return
    if size > MAX_MESSAGE_BYTES:
        errors.add(whole, f"is {size} bytes as JSON; the limit is {MAX_MESSAGE_BYTES} bytes")
    if "\\u0000" in text and (path := _find(value, _has_nul)) is not None:
        errors.add(_join(field, path) or whole, "contains a NUL character")
    # Depth is at most the number of containers, so most messages skip the walk.
    if text.count("{") + text.count("[") + level - 1 > MAX_DEPTH:
        top = _too_deep(value, level)
        if top is not None:
            errors.add(_join(field, top) or whole, _TOO_DEEP)


def _too_deep(value: Any, level: int) -> str | None:
    """The top-level key under which `value`, at `level`, nests past MAX_DEPTH, or None."""
    stack: list[tuple[Any, int, str]] = [(value, level, "")]
    while stack:
        node, depth, top = stack.pop()
        if depth > MAX_DEPTH:
            return top
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, top or _segment(key)))
    return None


def _where(value: Any, bad: Callable[[Any], bool], field: str) -> str:
    return _join(field, _find(value, bad) or "") or field or "(message)"


def _find(value: Any, bad: Callable[[Any], bool]) -> str | None:
    """The path of the first key or value for which `bad` holds, or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                sub = _join(path, _segment(key))
                if bad(key):
                    return sub
                stack.append((child, sub))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
        elif bad(node):
            return path
    return None


def _is_nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _has_surrogate(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _segment(key: Any) -> str:
    """A key as shown in an error: printable, short, safe to encode (it may be the culprit)."""
    text = str(key)
    if not text.isprintable():
        text = json.dumps(text)[1:-1]
    if len(text) > MAX_SEGMENT_CHARS:
        text = text[:MAX_SEGMENT_CHARS] + "…"
    return text


def _join(path: str, key: str) -> str:
    if not path:
        return key
    if not key:
        return path
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
