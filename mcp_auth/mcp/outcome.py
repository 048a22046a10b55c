"""How a call can end other than with a result: refused by step 7, or cancelled.

Transports map `ScopeDenied` and `PrincipalRevoked` (both `DispatchDenied`) to
their wire answers; `RequestCancelled` ends a handler whose call was cancelled
or whose session closed.
"""

from __future__ import annotations

from typing import Any


class DispatchDenied(Exception):
    """Step 7 refused the call; transports map the subclasses to their answers."""

    def __init__(self, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class RequestCancelled(Exception):
    """The call was cancelled (notifications/cancelled) or its session ended."""


class ScopeDenied(DispatchDenied):
    """The principal's scope does not include what it asked for."""


class PrincipalRevoked(DispatchDenied):
    """The principal's token was removed after the session or socket opened."""
