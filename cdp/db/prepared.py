"""A large SELECT compiled once and run many times with a few values changing.

SQLAlchemy spends more time on a big statement's cache key and parameters than the database
spends running it (a decision's eligibility query has hundreds of parameters). Here it is
compiled once and every fixed parameter converted once by its type's bind processor; each run
converts only the free values and goes straight to the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect


@dataclass(frozen=True)
class Prepared:
    sql: str
    values: tuple[Any, ...] | dict[str, Any]
    free: dict[str, tuple[tuple[int, ...], Callable[[Any], Any] | None]]
    """Per free parameter: its positions (positional paramstyles) and its converter."""

    def run(self, conn: Connection, given: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        converted = {
            name: process(given[name])
            if process is not None and given[name] is not None
            else given[name]
            for name, (_, process) in self.free.items()
        }
        if isinstance(self.values, dict):
            params: Any = {**self.values, **converted}
        else:
            listed = list(self.values)
            for name, (slots, _) in self.free.items():
                for slot in slots:
                    listed[slot] = converted[name]
            params = tuple(listed)
        return [tuple(row) for row in conn.exec_driver_sql(self.sql, params)]


def prepare(statement: Select[Any], dialect: Dialect, free: Callable[[str], bool]) -> Prepared:
    """Compile `statement` for `dialect`, leaving open the bound parameters `free` picks."""
    compiled = statement.compile(dialect=dialect)
    # IN lists expanded into one parameter per value, as SQLAlchemy does at execution; their
    # converters are in the expanded state, the others in the compiled statement.
    state = compiled.construct_expanded_state()
    processors = {**compiled._bind_processors, **state.processors}
    converted = {
        name: processors[name](value) if name in processors and value is not None else value
        for name, value in state.parameters.items()
    }
    names = [name for name in state.parameters if free(name)]
    order = state.positiontup
    slots = {name: tuple(i for i, n in enumerate(order or ()) if n == name) for name in names}
    open_ = {name: (slots[name], processors.get(name)) for name in names}
    if order is not None:
        return Prepared(state.statement, tuple(converted[n] for n in order), open_)
    return Prepared(state.statement, converted, open_)
