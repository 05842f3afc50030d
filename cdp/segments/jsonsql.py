"""Reading values out of JSON columns in SQL, the same way on SQLite and PostgreSQL.

Each accessor yields NULL where the value is missing or of another JSON type, never an error:
a trait that is a number on one profile and a string on another must not fail a query (a plain
cast would, on PostgreSQL).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    ColumnElement,
    Float,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB


class JsonPath:
    """The value at `path` inside the JSON column `col`."""

    def __init__(self, dialect: str, col: ColumnElement[Any], path: tuple[str, ...]) -> None:
        self.pg = dialect == "postgresql"
        self.col = col
        self.path = path
        if self.pg:
            self._path = bindparam(None, list(path), type_=ARRAY(Text))
        else:
            self._path = bindparam(None, "$" + "".join(f'."{p}"' for p in path), type_=String)

    def _json(self) -> ColumnElement[Any]:  # PostgreSQL: the jsonb value
        return self.col.op("#>", return_type=JSONB)(self._path)

    def _type(self) -> ColumnElement[str]:
        if self.pg:
            return func.jsonb_typeof(self._json())
        return func.json_type(self.col, self._path)

    def _text(self) -> ColumnElement[str]:
        if self.pg:
            return self.col.op("#>>", return_type=Text)(self._path)
        return func.json_extract(self.col, self._path)

    def present(self) -> ColumnElement[bool]:
        """There, and not JSON null."""
        return self._type().not_in(["null"])

    def number(self) -> ColumnElement[float]:
        if self.pg:
            return case((self._type() == "number", cast(self._text(), Float)))
        return case((self._type().in_(["integer", "real"]), self._text()))

    def string(self) -> ColumnElement[str]:
        wanted = "string" if self.pg else "text"
        return case((self._type() == wanted, self._text()))

    def boolean(self) -> ColumnElement[bool]:
        if self.pg:
            return case((self._type() == "boolean", cast(self._text(), Boolean)))
        return case((self._type() == "true", literal(True)), (self._type() == "false", false()))

    def list_contains(self, value: Any) -> ColumnElement[bool]:
        """A JSON array holding `value` (a string, number or boolean)."""
        if self.pg:
            wanted = bindparam(None, [value], type_=JSONB)
            return and_(self._type() == "array", self._json().op("@>")(wanted))
        items = func.json_each(self.col, self._path).table_valued("value", "type")
        if isinstance(value, bool):
            test = items.c.type == ("true" if value else "false")
        elif isinstance(value, str):
            test = and_(items.c.type == "text", items.c.value == value)
        else:
            test = and_(items.c.type.in_(["integer", "real"]), items.c.value == value)
        return and_(self._type() == "array", exists(select(1).select_from(items).where(test)))

    def value(self) -> ColumnElement[Any]:
        """The value as JSON (a jsonb on PostgreSQL, JSON text on SQLite), for storing."""
        if self.pg:
            return self._json()
        t = self._type()
        return case(
            (t == "text", func.json_quote(self._text())),
            (t == "true", literal("true")),
            (t == "false", literal("false")),
            (t == "null", literal("null")),
            else_=cast(self._text(), String),
        )

    def scalar(self) -> ColumnElement[Any]:
        """The value as SQL sees it (text for strings, numbers as numbers on SQLite), for
        grouping and counting distinct values."""
        return self._json() if self.pg else self._text()
