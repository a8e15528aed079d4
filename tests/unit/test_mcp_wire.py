"""The MCP message check both transports share: JSON-RPC 2.0's error codes and ids for each kind of
bad message, and nothing refused that the SDK reads as what it is."""

from __future__ import annotations

import json

import pytest
from mcp.types import jsonrpc_message_adapter

from londinium.mcp.wire import check_message

PARSE, INVALID = -32700, -32600


@pytest.mark.parametrize("line, code, request_id, says", [
    (b"garbage", PARSE, None, "Parse error"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', PARSE, None, "Parse error"),
    (b"\xff\xfe{}", PARSE, None, "not UTF-8"),
    (b"[" * 5000 + b"]" * 5000, PARSE, None, "recursion limit"),
    (b'{"jsonrpc": "2.0", "id": 6, "method": "ping", "params": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}", PARSE, None, "recursion limit"),
    (b'{"jsonrpc": "2.0", "id": 8, "method": "ping", "params": {"x": NaN}}', PARSE, None, "Parse error"),
    # a lone surrogate escape is JSON syntax but not Unicode text: the SDK's parser refuses it
    (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "generate", "arguments": {"prompt": "\\ud800"}}}',
     PARSE, None, "escapes must come in pairs"),
    (b'{"jsonrpc": "2.0", "id": "\\udc00x", "method": "ping"}', PARSE, None, "surrogate"),
    (b"[]", INVALID, None, "batches are not supported"),
    (b'"ping"', INVALID, None, "one JSON object"),
    # the SDK reads these as notifications and never answers them
    (b'{"jsonrpc": "2.0", "id": 7.5, "method": "ping"}', INVALID, None, "id must be a string or an integer"),
    (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', INVALID, None, "id must be"),
    (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', INVALID, None, "id must be"),
    (b'{"jsonrpc": "1.0", "id": "a", "method": "ping"}', INVALID, "a", '"jsonrpc": "2.0"'),
    (b'{"jsonrpc": "2.0", "id": 4, "method": 123}', INVALID, 4, '"method" must be a string'),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "ping", "params": [1]}', INVALID, 5, '"params" must be an object'),
    (b'{"jsonrpc": "2.0", "id": 9}', INVALID, 9, "not a request"),
])
def test_each_bad_message_gets_its_json_rpc_error_and_the_id_when_readable(line, code, request_id, says):
    error = check_message(line)
    assert error is not None and error.error.code == code and error.id == request_id, error
    assert says in error.error.message
    json.loads(error.model_dump_json(by_alias=True, exclude_unset=True))  # the answer itself is valid JSON


@pytest.mark.parametrize("line", [
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
    b'{"jsonrpc": "2.0", "id": "x", "method": "tools/call", "params": {"name": "generate", "arguments": {"prompt": "\\u00e9 \\ud83d\\ude00"}}}',
    b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\r\n',
    b'{"jsonrpc": "2.0", "id": 123456789012345678901234567890, "result": {}}',
    b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}',  # the host could not read an answer
])
def test_a_valid_message_passes_as_the_sdk_reads_it(line):
    assert check_message(line) is None
    jsonrpc_message_adapter.validate_json(line, by_name=False)
