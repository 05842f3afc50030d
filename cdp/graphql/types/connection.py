"""Relay cursor connections (https://relay.dev/graphql/connections.htm), keyset-paginated."""

from __future__ import annotations

import base64
import binascii
from typing import Generic, TypeVar

import strawberry

from cdp.errors import UserError

Node = TypeVar("Node")
MAX_PAGE = 100


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[Node]):
    cursor: str
    node: Node


@strawberry.type
class Connection(Generic[Node]):
    edges: list[Edge[Node]]
    page_info: PageInfo


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(f"k:{key}".encode()).decode()


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith("k:"):
        raise UserError("after: not a cursor returned by this API")
    return raw[2:]


def check_first(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise UserError(f"first: must be between 1 and {MAX_PAGE} (got {first})")
    return first


def connection(
    nodes: list[Node], keys: list[str], first: int, after: str | None
) -> Connection[Node]:
    """`nodes` are the page fetched with one extra row (limit first + 1) to tell if more follow."""
    page = nodes[:first]
    edges = [Edge(cursor=encode_cursor(k), node=n) for n, k in zip(page, keys, strict=False)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(nodes) > first,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
