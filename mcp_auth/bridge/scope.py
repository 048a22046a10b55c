"""Step 7 for a stdio child: which requests reach it, and what of its lists a token sees.

Pure functions over a request and a `Principal`: the child never sees a call
outside the token's scope (it is refused here, before forwarding), and the
child's lists are filtered before the client sees them. The lists are
filtered on every call, never cached, so a tool that appears later (after
`notifications/tools/list_changed`) is filtered like the others.

Methods the front does not know could do anything in the child (a newer
revision's method, a vendor extension), so only a token with an unrestricted
scope may send them; a scoped token gets a scope refusal.
"""

from __future__ import annotations

from typing import Any

from ..auth.tokens.principal import Principal
from ..mcp.jsonrpc import INVALID_PARAMS, JsonRpcError, Request

# Methods forwarded for every token (the scope applies inside them where they name something).
KNOWN_METHODS = frozenset(
    {
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
    }
)


def _text_param(request: Request, name: str) -> str:
    value = request.params.get(name)
    if not isinstance(value, str):
        raise JsonRpcError(INVALID_PARAMS, f"{request.method} needs params.{name} (a string)", request_id=request.id)
    return value


def refusal(request: Request, principal: Principal) -> str | None:
    """Why `principal` may not send `request` to the child (a sentence for the client), or None.

    Raises JsonRpcError for a request too malformed to judge (it never reaches the child either).
    """
    method = request.method
    token = principal.name
    if method == "tools/call":
        name = _text_param(request, "name")
        return None if principal.may_use(name) else f"the token '{token}' is not allowed to call the tool '{name}'"
    if method == "prompts/get":
        name = _text_param(request, "name")
        if principal.may_use(name, "prompt"):
            return None
        return f"the token '{token}' is not allowed to get the prompt '{name}'"
    if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        uri = _text_param(request, "uri")
        if principal.may_use(uri, "resource"):
            return None
        return f"the token '{token}' is not allowed to read the resource '{uri}'"
    if method == "completion/complete":
        return _completion_refusal(request, principal)
    if method in KNOWN_METHODS or principal.tool_patterns is None:
        return None
    return f"the token '{token}' has a limited scope, which does not cover the method '{method}'"


def _completion_refusal(request: Request, principal: Principal) -> str | None:
    ref = request.params.get("ref")
    if not isinstance(ref, dict):
        raise JsonRpcError(INVALID_PARAMS, "completion/complete needs params.ref (an object)", request_id=request.id)
    if ref.get("type") == "ref/prompt":
        name = ref.get("name")
        if isinstance(name, str) and principal.may_use(name, "prompt"):
            return None
        return f"the token '{principal.name}' is not allowed to complete arguments of the prompt {name!r}"
    if ref.get("type") == "ref/resource":
        uri = ref.get("uri")
        if isinstance(uri, str) and (principal.names_exactly(uri, "resource") or principal.may_use(uri, "resource")):
            return None
        return f"the token '{principal.name}' is not allowed to complete the resource template {uri!r}"
    raise JsonRpcError(INVALID_PARAMS, "completion/complete params.ref.type must be ref/prompt or ref/resource")


# list method -> (the result's list field, the item's name field, scope kind)
_LISTS = {
    "tools/list": ("tools", "name", "tool"),
    "resources/list": ("resources", "uri", "resource"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate", "resource"),
    "prompts/list": ("prompts", "name", "prompt"),
}


def visible(method: str, result: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """The child's answer to a list method with only what `principal` may use; other answers unchanged."""
    shape = _LISTS.get(method)
    if shape is None or principal.tool_patterns is None:
        return result
    field, key, kind = shape
    items = result.get(field)
    if not isinstance(items, list):
        return result

    def allowed(item: Any) -> bool:
        name = item.get(key) if isinstance(item, dict) else None
        if not isinstance(name, str):
            return False
        if kind == "resource" and field == "resourceTemplates" and principal.names_exactly(name, "resource"):
            return True
        return principal.may_use(name, kind)

    return {**result, field: [item for item in items if allowed(item)]}


def may_see_notification(message: dict[str, Any], principal: Principal) -> bool:
    """Whether a notification from the child may reach this principal (resource updates name a URI)."""
    if message.get("method") == "notifications/resources/updated":
        params = message.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        return isinstance(uri, str) and principal.may_use(uri, "resource")
    return True
