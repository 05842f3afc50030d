"""How a bad message is reported: each fault with its batch index and field."""

from __future__ import annotations

from dataclasses import dataclass

from cdp.errors import UserError


@dataclass(frozen=True)
class FieldError:
    index: int | None
    """Position in the batch; None for a single-message endpoint or the body itself."""
    field: str
    """Dotted path, e.g. `context.consent.categoryPreferences.ads`; `(body)` or `(message)`."""
    message: str

    def __str__(self) -> str:
        if self.index is None:
            return f"{self.field}: {self.message}"
        if self.field == "(message)":
            return f"batch[{self.index}]: {self.message}"
        return f"batch[{self.index}].{self.field}: {self.message}"


class MessageError(UserError):
    """One message, or a whole body, is invalid; `.errors` says where and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class _Errors:
    """Collects one message's errors so that all of them are reported at once."""

    __slots__ = ("index", "items")

    def __init__(self, index: int | None) -> None:
        self.index = index
        self.items: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.items.append(FieldError(self.index, field, message))


def _body_error(message: str, field: str = "(body)") -> MessageError:
    return MessageError([FieldError(None, field, message)])
