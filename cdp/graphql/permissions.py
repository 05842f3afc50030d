"""Scope checks: every root field and mutation declares the API-key scope it needs."""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.responses import Response
from strawberry.permission import BasePermission

from cdp.keys import Scope


class _NeedsScope(BasePermission):
    scope: ClassVar[Scope]
    error_extensions: ClassVar[dict[str, Any]] = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        principal = info.context.principal
        if principal is not None and principal.allows(self.scope):
            return True
        self.message = f"this field needs an API key with the '{self.scope}' scope"
        if isinstance(info.context.response, Response):  # not over WebSocket
            info.context.response.status_code = 403
        return False


class CanRead(_NeedsScope):
    scope = Scope.READ


class CanCollect(_NeedsScope):
    scope = Scope.COLLECT


class IsAdmin(_NeedsScope):
    scope = Scope.ADMIN


READ = [CanRead]
COLLECT = [CanCollect]
ADMIN = [IsAdmin]
