"""A fast yes for the common case of argument validation; everything else goes to the full validator.

Most tools take a flat object of strings, numbers, booleans and lists of
them, which is exactly what `mcp_auth.mcp.schema` infers from a Python
signature. For schemas built only from the keywords below, `quick_accept`
compiles a plain predicate once, at registration: it answers True only for a
value that the full validator would accept too, and False for anything it is
not sure of (then `CompiledSchema.problems` runs the full validator, which
also words the refusal). So a quick answer can never let through a value the
schema refuses: it only saves the `jsonschema` machinery on values that pass.

The keywords understood: `type`, `properties`, `required`,
`additionalProperties`, `items` (a single schema), `anyOf`, and annotations,
which never refuse anything (`title`, `description`, `default`, `examples`,
`$comment`, `deprecated`, `readOnly`, `writeOnly`, `$schema`, and `x-`
extensions). These mean the same in every dialect served (draft-07, 2019-09,
2020-12). Any other keyword (`format`, `pattern`, `enum`, bounds, `$ref`,
...) anywhere in a schema means no quick predicate for it.

Types are matched exactly (`type(value) is int`), so that a boolean is never
taken for a number and a float such as 1.0, which the dialects count as an
integer, simply goes to the full validator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Predicate = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$schema"}
)
_UNDERSTOOD = frozenset({"type", "properties", "required", "additionalProperties", "items", "anyOf"}) | _ANNOTATIONS

# JSON Schema type name -> the Python types json.loads produces for it, matched exactly.
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def quick_accept(schema: Any) -> Predicate | None:
    """A predicate that is True only for values `schema` accepts; None when the schema is beyond it."""
    return _compile(schema, depth=0)


# Deeper than any inferred schema nests; past it, the full validator does the work.
_MAX_DEPTH = 16


def _always(value: Any) -> bool:
    return True


def _compile(schema: Any, depth: int) -> Predicate | None:
    if schema is True:
        return _always
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    for key in schema:
        if key not in _UNDERSTOOD and not (isinstance(key, str) and key.startswith("x-")):
            return None
    checks: list[Predicate] = []
    if "type" in schema:
        names = schema["type"]
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(name in _TYPES for name in names):
            return None
        allowed = tuple({kind for name in names for kind in _TYPES[name]})
        checks.append(lambda value: type(value) in allowed)
    if "anyOf" in schema:
        branches = schema["anyOf"]
        if not isinstance(branches, list) or not branches:
            return None
        compiled = [_compile(branch, depth + 1) for branch in branches]
        if any(branch is None for branch in compiled):
            return None
        alternatives = [branch for branch in compiled if branch is not None]
        checks.append(lambda value: any(branch(value) for branch in alternatives))
    if any(key in schema for key in ("properties", "required", "additionalProperties")):
        object_check = _object_check(schema, depth)
        if object_check is None:
            return None
        checks.append(object_check)
    if "items" in schema:
        item = _compile(schema["items"], depth + 1)
        if item is None:
            return None  # a list of schemas (draft-07 tuples), or a schema beyond this module
        checks.append(lambda value: type(value) is not list or all(item(element) for element in value))
    return lambda value: all(check(value) for check in checks)


def _object_check(schema: dict[str, Any], depth: int) -> Predicate | None:
    """The check of `properties`, `required` and `additionalProperties`; None if they are beyond this module."""
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list):
        return None
    if not all(isinstance(name, str) for name in required):
        return None
    known: dict[str, Predicate] = {}
    for name, sub in properties.items():
        compiled = _compile(sub, depth + 1)
        if compiled is None:
            return None
        known[name] = compiled
    other = _compile(extra, depth + 1) if extra is not False else None
    if extra is not False and other is None:
        return None
    needed = tuple(required)

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return True  # these keywords only constrain objects
        for name in needed:
            if name not in value:
                return False
        for name, item in value.items():
            rule = known.get(name)
            if rule is None:
                if other is None or not other(item):
                    return False
            elif not rule(item):
                return False
        return True

    return check
