"""The MCP protocol layer: JSON-RPC messages, tools, resources, prompts and dispatch.

It knows nothing of HTTP, WSGI or token files: a transport hands it a parsed
message, the `Principal` the pipeline admitted, and a session it can push to;
it answers with a result or a dispatch refusal. Nothing here imports from the
rest of `mcp_auth` except `errors`, `_version` and `auth.tokens.principal`.
"""
