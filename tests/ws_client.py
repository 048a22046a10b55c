"""A WebSocket client transport for the `mcp` client (the SDK has none): the `websockets` library
carrying one JSON-RPC message per text frame, with subprotocol `mcp`, feeding the `mcp` client's
message streams. Kept in the tests on purpose: it is how a real client would connect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import mcp_types as types
from mcp.client._transport import TransportStreams
from mcp.shared.message import SessionMessage
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


@asynccontextmanager
async def websocket_client(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[TransportStreams]:
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    async with connect(url, subprotocols=["mcp"], additional_headers=headers or {}, max_size=None) as ws:  # type: ignore[list-item]

        async def reader() -> None:
            async with read_writer:
                try:
                    async for frame in ws:
                        message = types.jsonrpc_message_adapter.validate_json(frame, by_name=False)
                        await read_writer.send(SessionMessage(message))
                except ConnectionClosed:
                    pass

        async def writer() -> None:
            async with write_reader:
                async for session_message in write_reader:
                    await ws.send(session_message.message.model_dump_json(by_alias=True, exclude_unset=True))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reader)
            tasks.start_soon(writer)
            try:
                yield read_stream, write_stream
            finally:
                tasks.cancel_scope.cancel()


def ws_url(http_url: str) -> str:
    return "ws://" + http_url.removeprefix("http://")
