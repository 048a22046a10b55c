"""Finding the McpServer that `python -m mcp_auth serve TARGET` and `create_app(TARGET)` serve.

A TARGET is `package.module:attribute`, an McpServer or a function that takes
no arguments and returns one. This module trusts the operator's TARGET (it
imports and runs that module); it never sees a client.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from .errors import ConfigError
from .server import McpServer


def load_target(target: str) -> McpServer:
    """Import `module:attribute`; the attribute is an McpServer or a function returning one."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"TARGET {target!r} must look like package.module:server")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} from TARGET {target!r}: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        value = getattr(value, part, None)
        if value is None:
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r} (from TARGET {target!r})")
    if callable(value) and not isinstance(value, McpServer):
        try:
            inspect.signature(value).bind()
        except TypeError:
            servers = [name for name, item in vars(module).items() if isinstance(item, McpServer)]
            hint = f"; did you mean {module_name}:{servers[0]}?" if servers else ""
            raise ConfigError(
                f"TARGET {target!r} is a function that takes arguments (a tool?), not an mcp_auth.McpServer: "
                f"point TARGET at the McpServer object, or at a function that takes no arguments and returns one"
                f"{hint}"
            ) from None
        except ValueError:
            pass  # no signature to check (some builtins): calling it reports any problem
        value = value()
    if not isinstance(value, McpServer):
        raise ConfigError(f"TARGET {target!r} is a {type(value).__name__}, not an mcp_auth.McpServer")
    return value
