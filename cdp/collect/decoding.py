"""Decoding request bodies: strict JSON (no NaN, no overflow), a batch scanned item by item so
that each message keeps its own text."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from cdp.collect.errors import _body_error
from cdp.collect.limits import _TOO_DEEP, MAX_SEGMENT_CHARS


class _Refused(ValueError):
    """A number the decoder hooks refuse; its message is meant for the client."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    # A literal such as 1e400 decodes to infinity, which no JSON encoder will write back.
    value = float(literal)
    if math.isinf(value):
        raise _Refused(f"number {literal[:MAX_SEGMENT_CHARS]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _text(body: bytes, limit: int) -> str:
    if len(body) > limit:
        raise _body_error(f"is {len(body)} bytes; the limit is {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise _body_error("is not valid UTF-8") from None


def _decode(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError:
        # The decoder recurses once per level: far past MAX_DEPTH, so refused the same way.
        raise _body_error(_TOO_DEEP) from None
    except (json.JSONDecodeError, _Refused) as exc:
        raise _body_error(f"not valid JSON: {exc}") from None
    except ValueError:  # int() refuses integers longer than Python's digit limit
        limit = sys.get_int_max_str_digits()
        raise _body_error(f"not valid JSON: a number has more than {limit} digits") from None


def _decode_batch(text: str) -> tuple[Any, list[tuple[int, int]] | None]:
    """The decoded body and, when it is a plain object, where each `batch` item's text lies."""
    try:
        return _scan_object(text)
    except RecursionError:
        raise _body_error(_TOO_DEEP) from None
    except ValueError:
        # Decoding the whole text again gives json's own error message (or, were the scanner
        # wrong about valid JSON, the data, checked by the slower exact path).
        return _decode(text), None


def _scan_object(text: str) -> tuple[dict[str, Any], list[tuple[int, int]] | None]:
    """Decode a JSON object, keeping the spans of the items of its `batch` array.

    Raises ValueError on anything that is not such an object, or not valid JSON.
    """
    data: dict[str, Any] = {}
    spans: list[tuple[int, int]] | None = None
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        raise ValueError("not an object")
    i = _skip(text, i + 1)
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            key, i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if not isinstance(key, str) or text[i : i + 1] != ":":
                raise ValueError("expected a key")
            i = _skip(text, i + 1)
            if key == "batch" and text[i : i + 1] == "[":
                value, spans, i = _scan_array(text, i)
            else:
                value, i = _DECODER.raw_decode(text, i)
                spans = None if key == "batch" else spans
            data[key] = value
            i = _skip(text, i)
            char = text[i : i + 1]
            i = _skip(text, i + 1)
            if char == "}":
                break
            if char != ",":
                raise ValueError("expected , or }")
    if _skip(text, i) != len(text):
        raise ValueError("extra data")
    return data, spans


def _scan_array(text: str, i: int) -> tuple[list[Any], list[tuple[int, int]], int]:
    """Decode the array at `text[i]` with each item's span; returns the index after it."""
    items: list[Any] = []
    spans: list[tuple[int, int]] = []
    scan = _DECODER.scan_once  # raw_decode without its wrapper: this loop runs per message
    i = _skip(text, i + 1)
    if text[i : i + 1] == "]":
        return items, spans, i + 1
    while True:
        try:
            item, end = scan(text, i)
        except StopIteration:  # what the scanner raises where no value starts
            raise ValueError("expected a value") from None
        items.append(item)
        spans.append((i, end))
        i = _skip(text, end)
        char = text[i : i + 1]
        i = _skip(text, i + 1)
        if char == "]":
            return items, spans, i
        if char != ",":
            raise ValueError("expected , or ]")


def _skip(text: str, i: int) -> int:
    match = _WHITESPACE.match(text, i)
    return match.end() if match else i
