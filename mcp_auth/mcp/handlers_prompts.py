"""The prompt and completion methods of the dispatcher: prompts/list, prompts/get, completion/complete.

A mixin of `Dispatcher` (`mcp_auth.mcp.dispatch`): each checks the principal's
`prompt:` (or, for a resource template's completions, `resource:`) scope before
it runs anything, and turns a handler's failure into a JSON-RPC error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .context import Call
from .jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, REQUEST_CANCELLED, JsonRpcError, Request
from .outcome import RequestCancelled, ScopeDenied
from .protocol import MAX_COMPLETION_VALUES
from .registry import Registry
from .results import _page, _prompt_messages


class PromptHandlers:
    """prompts/list, prompts/get and completion/complete."""

    # Provided by Dispatcher.
    _registry: Registry
    _run: Callable[..., Any]
    _invoke: Callable[..., Any]
    _handler_failed: Callable[[str, str, Exception], None]

    def _prompts_list(self, request: Request, call: Call) -> dict[str, Any]:
        visible = [p.definition for p in self._registry.prompts.values() if call.principal.may_use(p.name, "prompt")]
        return _page(visible, request.params, "prompts")

    def _prompts_get(self, request: Request, call: Call) -> dict[str, Any]:
        name = request.params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(INVALID_PARAMS, "prompts/get needs params.name (a string)")
        if not call.principal.may_use(name, "prompt"):
            raise ScopeDenied(
                f"the token '{call.principal.name}' is not allowed to get the prompt '{name}'", request.id
            )
        prompt = self._registry.prompts.get(name)
        if prompt is None:
            raise JsonRpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
        arguments = request.params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise JsonRpcError(INVALID_PARAMS, "prompts/get params.arguments must be an object")
        problems = prompt.arguments.problems(arguments)
        if problems:
            raise JsonRpcError(INVALID_PARAMS, "Invalid prompt arguments: " + "; ".join(problems))
        try:
            value = self._run(request, call, prompt.fn, prompt.signature, arguments)
            result: dict[str, Any] = {"messages": _prompt_messages(value)}
        except RequestCancelled as exc:
            raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
        except Exception as exc:
            self._handler_failed("prompt", name, exc)
            raise JsonRpcError(INTERNAL_ERROR, f"Prompt {name} failed: {type(exc).__name__}: {exc}") from None
        if "description" in prompt.definition:
            result["description"] = prompt.definition["description"]
        return result

    def _complete(self, request: Request, call: Call) -> dict[str, Any]:
        ref = request.params.get("ref")
        argument = request.params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise JsonRpcError(INVALID_PARAMS, "completion/complete needs params.ref and params.argument (objects)")
        ref_type = ref.get("type")
        ref_key = ref.get("name") if ref_type == "ref/prompt" else ref.get("uri")
        arg_name, arg_value = argument.get("name"), argument.get("value", "")
        if not isinstance(ref_key, str) or not isinstance(arg_name, str) or not isinstance(arg_value, str):
            raise JsonRpcError(
                INVALID_PARAMS, "completion/complete: ref needs name or uri; argument needs name and value"
            )
        scope_kind = "prompt" if ref_type == "ref/prompt" else "resource"
        completer = self._registry.completions.get((str(ref_type), ref_key))
        values: list[str] = []
        if completer is not None and call.principal.may_use(ref_key, scope_kind):
            context = request.params.get("context")
            context_arguments = context.get("arguments", {}) if isinstance(context, dict) else {}
            try:
                suggested = self._invoke(request, call, completer, (arg_name, arg_value, context_arguments), {})
                values = [str(v) for v in suggested]
            except RequestCancelled as exc:
                raise JsonRpcError(REQUEST_CANCELLED, str(exc)) from None
            except Exception as exc:
                self._handler_failed("completion for", ref_key, exc)
                raise JsonRpcError(INTERNAL_ERROR, f"Completion failed: {type(exc).__name__}: {exc}") from None
        return {
            "completion": {
                "values": values[:MAX_COMPLETION_VALUES],
                "total": len(values),
                "hasMore": len(values) > MAX_COMPLETION_VALUES,
            }
        }
