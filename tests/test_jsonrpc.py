"""Tables for mcp_auth.mcp.jsonrpc: parsing one message, refusing the rest, serializing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_auth.mcp.jsonrpc import (
    INVALID_REQUEST,
    MAX_JSON_DEPTH,
    PARSE_ERROR,
    BatchNotSupported,
    ErrorResponse,
    JsonRpcError,
    Message,
    Notification,
    Request,
    Response,
    dumps,
    loads,
    parse_message,
)


def nested_request(depth: int) -> str:
    """A request whose containers nest exactly `depth` levels (the message object is level 1)."""
    lists = depth - 2  # the message object and its params take two levels
    return '{"jsonrpc":"2.0","id":1,"method":"m","params":{"v":' + "[" * lists + "]" * lists + "}}"


def nested_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


# --- parse_message: what is accepted -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"c"}}',
            Request(1, "tools/list", {"cursor": "c"}),
            id="request-int-id",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":"abc","method":"ping"}',
            Request("abc", "ping", {}),
            id="request-string-id-no-params",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":"","method":"ping"}', Request("", "ping", {}), id="request-empty-string-id"
        ),
        pytest.param(b'{"jsonrpc":"2.0","id":0,"method":"ping"}', Request(0, "ping", {}), id="request-id-zero"),
        pytest.param(b'{"jsonrpc":"2.0","id":-7,"method":"ping"}', Request(-7, "ping", {}), id="request-negative-id"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":12345678901234567890,"method":"ping"}',
            Request(12345678901234567890, "ping", {}),
            id="request-big-int-id",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":3,"method":"ping","params":null}',
            Request(3, "ping", {}),
            id="params-null-is-empty",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
            Notification("notifications/initialized", {}),
            id="notification",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}',
            Notification("notifications/cancelled", {"requestId": 4}),
            id="notification-with-params",
        ),
        pytest.param(b'{"jsonrpc":"2.0","id":5,"result":{"ok":true}}', Response(5, {"ok": True}), id="response"),
        pytest.param(b'{"jsonrpc":"2.0","id":"r","result":{}}', Response("r", {}), id="response-empty-result"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":6,"error":{"code":-32601,"message":"nope"}}',
            ErrorResponse(6, -32601, "nope", None),
            id="error-response",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad","data":{"at":3}}}',
            ErrorResponse(None, -32700, "bad", {"at": 3}),
            id="error-response-null-id-with-data",
        ),
        pytest.param(
            '{"jsonrpc":"2.0","id":1,"method":"m","params":{"t":"é"}}',
            Request(1, "m", {"t": "é"}),
            id="str-input",
        ),
        pytest.param(
            '{"jsonrpc":"2.0","id":1,"method":"m","params":{"t":"é"}}'.encode(),
            Request(1, "m", {"t": "é"}),
            id="utf8-bytes",
        ),
        pytest.param(bytearray(b'{"jsonrpc":"2.0","id":1,"method":"ping"}'), Request(1, "ping", {}), id="bytearray"),
        pytest.param(
            b' \n{"jsonrpc":"2.0","id":1,"method":"ping"}\r\n ', Request(1, "ping", {}), id="surrounding-whitespace"
        ),
    ],
)
def test_parse_message_accepts(data: bytes | str, expected: Message) -> None:
    message = parse_message(data)
    assert message == expected
    assert type(message) is type(expected)


# --- parse_message: what is refused ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "request_id", "fragment"),
    [
        # ids
        pytest.param(b'{"jsonrpc":"2.0","id":true,"method":"m"}', INVALID_REQUEST, None, '"id"', id="id-bool"),
        pytest.param(b'{"jsonrpc":"2.0","id":false,"method":"m"}', INVALID_REQUEST, None, '"id"', id="id-false"),
        pytest.param(b'{"jsonrpc":"2.0","id":1.5,"method":"m"}', INVALID_REQUEST, None, '"id"', id="id-float"),
        pytest.param(b'{"jsonrpc":"2.0","id":1.0,"method":"m"}', INVALID_REQUEST, None, '"id"', id="id-float-whole"),
        pytest.param(b'{"jsonrpc":"2.0","id":null,"method":"m"}', INVALID_REQUEST, None, '"id"', id="id-null"),
        pytest.param(b'{"jsonrpc":"2.0","id":{"a":1},"method":"m"}', INVALID_REQUEST, None, '"id"', id="id-object"),
        pytest.param(b'{"jsonrpc":"2.0","id":[1],"method":"m"}', INVALID_REQUEST, None, '"id"', id="id-array"),
        # jsonrpc member
        pytest.param(b'{"id":1,"method":"m"}', INVALID_REQUEST, 1, '"jsonrpc"', id="jsonrpc-missing"),
        pytest.param(b'{"jsonrpc":"1.0","id":1,"method":"m"}', INVALID_REQUEST, 1, '"jsonrpc"', id="jsonrpc-1.0"),
        pytest.param(b'{"jsonrpc":2.0,"id":"s","method":"m"}', INVALID_REQUEST, "s", '"jsonrpc"', id="jsonrpc-number"),
        pytest.param(b'{"jsonrpc":null,"id":2,"method":"m"}', INVALID_REQUEST, 2, '"jsonrpc"', id="jsonrpc-null"),
        pytest.param(
            b'{"jsonrpc":"1.0","id":true,"method":"m"}',
            INVALID_REQUEST,
            None,
            '"jsonrpc"',
            id="jsonrpc-wrong-id-unreadable",
        ),
        # method
        pytest.param(b'{"jsonrpc":"2.0","id":7,"method":""}', INVALID_REQUEST, 7, '"method"', id="method-empty"),
        pytest.param(b'{"jsonrpc":"2.0","id":7,"method":5}', INVALID_REQUEST, 7, '"method"', id="method-number"),
        pytest.param(b'{"jsonrpc":"2.0","id":7,"method":null}', INVALID_REQUEST, 7, '"method"', id="method-null"),
        pytest.param(
            b'{"jsonrpc":"2.0","method":""}', INVALID_REQUEST, None, '"method"', id="notification-method-empty"
        ),
        # params
        pytest.param(
            b'{"jsonrpc":"2.0","id":8,"method":"m","params":[1,2]}', INVALID_REQUEST, 8, '"params"', id="params-array"
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":8,"method":"m","params":"x"}', INVALID_REQUEST, 8, '"params"', id="params-string"
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":8,"method":"m","params":3}', INVALID_REQUEST, 8, '"params"', id="params-number"
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"m","params":[]}',
            INVALID_REQUEST,
            None,
            '"params"',
            id="notification-params-array",
        ),
        # responses
        pytest.param(b'{"jsonrpc":"2.0","result":{}}', INVALID_REQUEST, None, '"id"', id="response-no-id"),
        pytest.param(b'{"jsonrpc":"2.0","id":null,"result":{}}', INVALID_REQUEST, None, '"id"', id="response-null-id"),
        pytest.param(b'{"jsonrpc":"2.0","id":9,"result":[1]}', INVALID_REQUEST, 9, '"result"', id="result-array"),
        pytest.param(b'{"jsonrpc":"2.0","id":9,"result":"ok"}', INVALID_REQUEST, 9, '"result"', id="result-string"),
        pytest.param(b'{"jsonrpc":"2.0","id":9,"error":"bad"}', INVALID_REQUEST, 9, '"error"', id="error-not-object"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":9,"error":{"message":"m"}}', INVALID_REQUEST, 9, '"code"', id="error-no-code"
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":9,"error":{"code":true,"message":"m"}}',
            INVALID_REQUEST,
            9,
            '"code"',
            id="error-code-bool",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":9,"error":{"code":1.5,"message":"m"}}',
            INVALID_REQUEST,
            9,
            '"code"',
            id="error-code-float",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":9,"error":{"code":1}}', INVALID_REQUEST, 9, '"message"', id="error-no-message"
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":9,"error":{"code":1,"message":2}}',
            INVALID_REQUEST,
            9,
            '"message"',
            id="error-message-number",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":10}', INVALID_REQUEST, 10, '"method", "result" or "error"', id="no-member"
        ),
        # not an object
        pytest.param(b'"hello"', INVALID_REQUEST, None, "JSON object", id="top-level-string"),
        pytest.param(b"42", INVALID_REQUEST, None, "JSON object", id="top-level-number"),
        pytest.param(b"null", INVALID_REQUEST, None, "JSON object", id="top-level-null"),
        pytest.param(b"true", INVALID_REQUEST, None, "JSON object", id="top-level-bool"),
        # not JSON
        pytest.param(b"", PARSE_ERROR, None, "Parse error", id="empty-body"),
        pytest.param(b"{", PARSE_ERROR, None, "Parse error", id="truncated"),
        pytest.param(b'{"jsonrpc":"2.0",}', PARSE_ERROR, None, "Parse error", id="trailing-comma"),
        pytest.param(b"\xff\xfe{}", PARSE_ERROR, None, "UTF-8", id="invalid-utf8"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"\xc3("}', PARSE_ERROR, None, "UTF-8", id="invalid-utf8-in-string"
        ),
        pytest.param(
            '\ufeff{"jsonrpc":"2.0","id":1,"method":"m"}'.encode(), PARSE_ERROR, None, "Parse error", id="utf8-bom"
        ),
        pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":NaN}}', PARSE_ERROR, None, "NaN", id="nan"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":Infinity}}',
            PARSE_ERROR,
            None,
            "Infinity",
            id="infinity",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":-Infinity}}',
            PARSE_ERROR,
            None,
            "-Infinity",
            id="minus-infinity",
        ),
        pytest.param(b"NaN", PARSE_ERROR, None, "NaN", id="nan-top-level"),
    ],
)
def test_parse_message_refuses(data: bytes, code: int, request_id: object, fragment: str) -> None:
    with pytest.raises(JsonRpcError) as info:
        parse_message(data)
    assert info.value.code == code
    assert info.value.request_id == request_id
    assert type(info.value.request_id) is type(request_id)
    assert fragment in info.value.message
    assert not isinstance(info.value, BatchNotSupported)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[]", id="empty-array"),
        pytest.param(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', id="one-request"),
        pytest.param(b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]', id="two-messages"),
        pytest.param(b"[1, 2, 3]", id="array-of-numbers"),
    ],
)
def test_parse_message_refuses_batches(data: bytes) -> None:
    with pytest.raises(BatchNotSupported) as info:
        parse_message(data)
    assert info.value.code == INVALID_REQUEST
    assert info.value.request_id is None
    assert "batch" in info.value.message


# --- nesting depth -----------------------------------------------------------------


def test_depth_limit_is_64() -> None:
    assert MAX_JSON_DEPTH == 64


@pytest.mark.parametrize(
    "depth",
    [
        pytest.param(3, id="shallow"),
        pytest.param(63, id="63"),
        pytest.param(64, id="64-at-limit"),
    ],
)
def test_parse_message_accepts_nesting_up_to_limit(depth: int) -> None:
    message = parse_message(nested_request(depth))
    assert isinstance(message, Request)
    assert message.params == {"v": nested_list(depth - 2)}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(nested_request(65), id="65-one-past-limit"),
        pytest.param(nested_request(66), id="66"),
        pytest.param(nested_request(500), id="500-below-recursion-limit"),
        pytest.param(nested_request(100_000), id="100000-levels"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="100000-arrays"),
        pytest.param('{"a":' * 100_000 + "1" + "}" * 100_000, id="100000-objects"),
        pytest.param("[" * 100_000, id="100000-unclosed"),
    ],
)
def test_parse_message_refuses_deep_nesting(data: str) -> None:
    # A RecursionError (or any other exception) escaping here fails the test.
    with pytest.raises(JsonRpcError) as info:
        parse_message(data)
    assert info.value.code == PARSE_ERROR
    assert info.value.request_id is None


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        pytest.param("[" * 64 + "]" * 64, False, id="64-arrays"),
        pytest.param("[" * 65 + "]" * 65, True, id="65-arrays"),
        pytest.param('{"a":' * 64 + "1" + "}" * 64, False, id="64-objects"),
        pytest.param('{"a":' * 65 + "1" + "}" * 65, True, id="65-objects"),
        pytest.param('["' + "[" * 200 + '"]', False, id="brackets-inside-a-string-are-not-depth"),
        pytest.param("[" + ",".join(["[]"] * 500) + "]", False, id="wide-not-deep"),
    ],
)
def test_loads_depth(text: str, refused: bool) -> None:
    if refused:
        with pytest.raises(JsonRpcError) as info:
            loads(text)
        assert info.value.code == PARSE_ERROR
        assert str(MAX_JSON_DEPTH) in info.value.message
    else:
        assert loads(text) == json.loads(text)


# --- loads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"[1,2]", [1, 2], id="array-allowed-in-loads"),
        pytest.param(b'"\\u00e9"', "é", id="escaped-unicode"),
        pytest.param('"\\ud800"', "\ud800", id="lone-surrogate-escape"),
        pytest.param(b"1e2", 100.0, id="exponent"),
        pytest.param(b"null", None, id="null"),
        pytest.param('"é"'.encode(), "é", id="raw-utf8"),
    ],
)
def test_loads(data: bytes | str, expected: Any) -> None:
    assert loads(data) == expected


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"\x80", "UTF-8", id="bad-utf8"),
        pytest.param(b"NaN", "NaN", id="nan"),
        pytest.param("Infinity", "Infinity", id="infinity-str"),
        pytest.param(b"{'a': 1}", "Parse error", id="single-quotes"),
        pytest.param(b"1 2", "Parse error", id="two-values"),
    ],
)
def test_loads_refuses(data: bytes | str, fragment: str) -> None:
    with pytest.raises(JsonRpcError) as info:
        loads(data)
    assert info.value.code == PARSE_ERROR
    assert fragment in info.value.message


# --- dumps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(Request(1, "ping"), b'{"jsonrpc":"2.0","id":1,"method":"ping"}', id="request-no-params"),
        pytest.param(
            Request("a", "tools/call", {"name": "echo"}),
            b'{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo"}}',
            id="request-with-params",
        ),
        pytest.param(
            Notification("notifications/initialized"),
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
            id="notification",
        ),
        pytest.param(
            Notification("n", {"k": [1, 2]}),
            b'{"jsonrpc":"2.0","method":"n","params":{"k":[1,2]}}',
            id="notification-params",
        ),
        pytest.param(Response(2, {}), b'{"jsonrpc":"2.0","id":2,"result":{}}', id="response"),
        pytest.param(
            ErrorResponse(None, -32700, "Parse error"),
            b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
            id="error-null-id-no-data",
        ),
        pytest.param(
            ErrorResponse(3, -32002, "nf", {"uri": "x"}),
            b'{"jsonrpc":"2.0","id":3,"error":{"code":-32002,"message":"nf","data":{"uri":"x"}}}',
            id="error-with-data",
        ),
        pytest.param({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}', id="plain-dict-compact"),
        pytest.param(
            Response(1, {"t": "é€😀"}),
            b'{"jsonrpc":"2.0","id":1,"result":{"t":"\\u00e9\\u20ac\\ud83d\\ude00"}}',
            id="ascii-escapes",
        ),
        pytest.param(
            Response(1, {"s": "\ud800"}), b'{"jsonrpc":"2.0","id":1,"result":{"s":"\\ud800"}}', id="lone-surrogate"
        ),
    ],
)
def test_dumps(message: Message | dict[str, Any], expected: bytes) -> None:
    out = dumps(message)
    assert out == expected
    assert out.isascii()


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(Request(1, "m", {"s": "\ud800"}), id="lone-high-surrogate"),
        pytest.param(Request(1, "m", {"s": "a\udfffb"}), id="lone-low-surrogate"),
        pytest.param(Notification("m", {"nested": {"list": ["é", "\u2028", "\x00"]}}), id="control-and-separators"),
        pytest.param(Response("x", {"n": 1.5, "big": 2**70, "neg": -1}), id="numbers"),
        pytest.param(ErrorResponse(4, -32603, "boom", ["d"]), id="error"),
    ],
)
def test_dumps_round_trips_through_parse_message(message: Message) -> None:
    assert parse_message(dumps(message)) == message


def test_error_to_message_carries_everything() -> None:
    error = JsonRpcError(-32602, "bad", data={"k": 1}, request_id="r1")
    assert error.to_message() == ErrorResponse("r1", -32602, "bad", {"k": 1})
    assert str(error) == "bad"
