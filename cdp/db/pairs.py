"""`(a, b) IN <many pairs>`, fast on both backends.

SQLite plans `(a, b) IN (VALUES (...), ...)` as a scan of the whole table; reading the pairs from
a JSON array (`json_each`) lets it use the (a, b) index. PostgreSQL gets two arrays (`unnest`).
Either way the pairs are one or two bound parameters, so the statement compiles once."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import ARRAY, ColumnElement, String, bindparam, column, func, select, tuple_
from sqlalchemy.engine import Dialect


def pairs_in(
    dialect: Dialect, a: ColumnElement[str], b: ColumnElement[str], pairs: Sequence[tuple[str, str]]
) -> ColumnElement[bool]:
    if dialect.name == "postgresql":
        rows = (
            func.unnest(
                bindparam(None, [p[0] for p in pairs], type_=ARRAY(String)),
                bindparam(None, [p[1] for p in pairs], type_=ARRAY(String)),
            )
            .table_valued("a", "b")
            .render_derived()
        )
        return tuple_(a, b).in_(select(rows.c.a, rows.c.b))
    rows = func.json_each(bindparam(None, orjson.dumps(pairs).decode(), type_=String)).table_valued(
        column("value")
    )
    return tuple_(a, b).in_(
        select(func.json_extract(rows.c.value, "$[0]"), func.json_extract(rows.c.value, "$[1]"))
    )
