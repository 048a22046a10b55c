"""The resource methods of the dispatcher: list, templates/list, read, subscribe, unsubscribe.

A mixin of `Dispatcher` (`mcp_auth.mcp.dispatch`), kept apart because reading
a resource is the one path with its own scope rules: the URI is bounded,
matched once against the templates, and judged on its decoded form, so a
scoped token cannot probe what lies outside its scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .context import Call
from .handlers_modern import read_cache_hints
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    REQUEST_CANCELLED,
    RESOURCE_NOT_FOUND,
    JsonRpcError,
    Request,
)
from .outcome import RequestCancelled, ScopeDenied
from .protocol import MAX_SUBSCRIPTIONS, MAX_URI_LENGTH
from .registry import Registry, _Target
from .results import _page, _read_contents
from .session_state import TooManySubscriptions
from .uritemplate import RefusedValue


class ResourceHandlers:
    """resources/list, resources/templates/list, resources/read, resources/subscribe and unsubscribe."""

    # Provided by Dispatcher.
    _registry: Registry
    _run: Callable[..., Any]
    _handler_failed: Callable[[str, str, Exception], None]

    def _resource_may_stream(self, uri: str) -> bool:
        static = self._registry.resources.get(uri)
        if static is not None:
            return static.signature.context_parameter is not None
        return any(
            resource.signature.context_parameter is not None and resource.template.could_match(uri)
            for resource in self._registry.templates.values()
            if resource.template is not None
        )

    def _resources_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [r.definition for r in self._registry.resources.values() if call.principal.may_use(r.uri, "resource")]
        return _page(visible, request.params, "resources")

    def _templates_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [r.definition for r in self._registry.templates.values() if call.principal.may_use(r.uri, "resource")]
        return _page(visible, request.params, "resourceTemplates")

    def _resources_read(self, request: Request, call: Call) -> dict[str, Any]:
        uri = request.params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(INVALID_PARAMS, "resources/read needs params.uri (a string)")
        target = self._resource_target(uri, request, call)
        if target is None:
            # The handshake era's -32002; the stateless revision names a missing resource -32602.
            code = RESOURCE_NOT_FOUND if call.modern is None else INVALID_PARAMS
            raise JsonRpcError(code, f"Resource not found: {uri}", data={"uri": uri})
        resource = target.resource
        try:
            value = self._run(request, call, resource.fn, resource.signature, target.arguments)
            result: dict[str, Any] = {"contents": _read_contents(uri, value, resource.mime_type)}
            if call.modern is not None:
                result.update(read_cache_hints(resource.cache_scope, resource.ttl_ms, request, call))
            return result
        except RequestCancelled as exc:
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:
            self._handler_failed("resource", uri, exc)
            raise JsonRpcError(INTERNAL_ERROR, f"Reading {uri} failed: {type(exc).__name__}: {exc}") from None

    def _resource_target(self, uri: str, request: Request, call: Call) -> _Target | None:
        """The resource `uri` names, checked against the principal's scope; None: in scope but not found.

        The order is the point: the length bound, then whether the token may
        read any resource at all (a token without resource patterns causes no
        matching), then one linear match, then the scope judged on the decoded
        URI the handler will be asked for. A scoped token cannot probe: what
        is outside its scope is refused the same way whether it exists or not.
        """
        if len(uri) > MAX_URI_LENGTH:
            raise JsonRpcError(INVALID_PARAMS, f"The URI is longer than {MAX_URI_LENGTH} characters")
        principal = call.principal
        if not principal.may_use_some("resource"):
            raise self._resource_denied(uri, request, call)
        static = self._registry.resources.get(uri)
        if static is not None:
            if principal.may_use(uri, "resource"):
                return _Target(static, {}, uri)
            raise self._resource_denied(uri, request, call)
        for resource in self._registry.templates.values():
            assert resource.template is not None
            try:
                resolved = resource.template.resolve(uri)
            except RefusedValue as exc:
                # Refused whatever the scope; the scope only decides which refusal is told.
                if principal.may_use(uri, "resource") or principal.names_exactly(resource.uri, "resource"):
                    raise JsonRpcError(INVALID_PARAMS, str(exc), data={"uri": uri}) from None
                raise self._resource_denied(uri, request, call) from None
            if resolved is None:
                continue  # templates are tried in registration order; the first that matches decides
            # A templated resource is in scope when its decoded URI matches a
            # pattern, or a pattern is the template's own text.
            if principal.may_use(resolved.effective_uri, "resource") or principal.names_exactly(
                resource.uri, "resource"
            ):
                return _Target(resource, resolved.arguments, resolved.effective_uri)
            raise self._resource_denied(uri, request, call)
        if principal.may_use(uri, "resource"):
            return None
        raise self._resource_denied(uri, request, call)

    def _may_read(self, uri: str, request: Request, call: Call) -> bool:
        """Whether `uri` names a resource (static, or matching a template) that the principal may read."""
        try:
            return self._resource_target(uri, request, call) is not None
        except (JsonRpcError, ScopeDenied):
            return False

    @staticmethod
    def _resource_denied(uri: str, request: Request, call: Call) -> ScopeDenied:
        return ScopeDenied(f"the token '{call.principal.name}' is not allowed to read the resource '{uri}'", request.id)

    def _subscription_uri(self, request: Request, call: Call) -> str:
        uri = request.params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise JsonRpcError(INVALID_PARAMS, f"{request.method} needs params.uri (a string)")
        # The same path as resources/read: scope first, one linear match, scope on the decoded URI.
        self._resource_target(uri, request, call)
        return uri

    def _subscribe(self, request: Request, call: Call) -> dict[str, Any]:
        uri = self._subscription_uri(request, call)
        try:
            call.session.state.subscribe(uri, MAX_SUBSCRIPTIONS)
        except TooManySubscriptions as exc:
            raise JsonRpcError(INVALID_REQUEST, str(exc)) from None
        return {}

    def _unsubscribe(self, request: Request, call: Call) -> dict[str, Any]:
        uri = self._subscription_uri(request, call)
        call.session.state.unsubscribe(uri)
        return {}
