"""The dispatcher's part of `subscriptions/listen` (2026-07-28): what a principal may hear, and the graceful end.

A mixin of `Dispatcher` (`mcp_auth.mcp.dispatch`). The transports own a
listen's stream or socket (`mcp_auth.listen`); they ask the dispatcher once,
when the listen opens, which part of its filter this principal is allowed to
hear, and that honoured filter is all the listen is ever delivered
(`subscriptions.Subscription`). Scope is decided here, with the same
judgment as the read and list methods, so a listen cannot learn more than
those would tell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .call import Call
from .jsonrpc import Request
from .outcome import PrincipalRevoked
from .subscriptions import LIST_CHANGED_MEMBERS, Subscription, SubscriptionFilter, Subscriptions


class ListenHandlers:
    """honoured_filter and the listen's final result; the registry the `notify_*` methods fan out through."""

    # Provided by Dispatcher.
    subscriptions: Subscriptions
    _may_read: Callable[[str, Request, Call], bool]
    _server_info: Callable[[], dict[str, str]]

    def honoured_filter(self, request: Request, call: Call) -> SubscriptionFilter:
        """What of a subscriptions/listen filter this principal will hear; the transport opens the stream.

        Step 7 first, as for any request. Then scope, decided once: a kind is
        honoured when the token's scope has patterns for it (a token that can
        see no prompt would only learn that someone else's prompts changed), a
        resource URI when it names a resource the token may read (the same
        judgment as resources/read); anything else is left out of the
        acknowledgment and is never delivered. Raises JsonRpcError for a
        malformed filter, PrincipalRevoked for a token that is gone.
        """
        if not call.is_current():
            raise PrincipalRevoked("the token of this request was revoked; authenticate again", request.id)
        wanted = SubscriptionFilter.parse(request.params, request.id)
        kinds = frozenset(
            kind
            for kind, scope_kind in LIST_CHANGED_MEMBERS.values()
            if kind in wanted.list_changed and call.principal.may_use_some(scope_kind)
        )
        uris = tuple(uri for uri in wanted.resources if self._may_read(uri, request, call))
        return SubscriptionFilter(kinds, uris)

    def listen_final_result(self, subscription: Subscription) -> dict[str, Any]:
        """The graceful end of a listen (server shutdown): its result, naming this server like every result."""
        return subscription.final_result(self._server_info())
