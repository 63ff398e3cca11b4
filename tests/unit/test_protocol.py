# SPDX-License-Identifier: Apache-2.0
"""The wire codec: round trips, and bad messages rejected with the field named."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from lspilot.protocol import codec
from lspilot.protocol.messages import (
    CompleteChunk,
    CompleteRequest,
    FinishReason,
    InfoRequest,
    Snippet,
    StopPolicy,
    Timings,
)
from lspilot.protocol.validate import check_complete_request

REQUEST = CompleteRequest(
    request_id="r1",
    client_id="c",
    uri="file:///a.py",
    language_id="python",
    prefix="def f(",
    suffix=")\n",
    snippets=(Snippet("b.py", "x = 1"),),
    stop=StopPolicy.MULTI_LINE,
)


def _raw(**changes) -> bytes:
    plain = msgpack.unpackb(codec.encode(REQUEST))
    plain.update(changes)
    return msgpack.packb(plain)


def test_request_round_trip():
    assert codec.decode(CompleteRequest, codec.encode(REQUEST)) == REQUEST


def test_chunk_round_trip_with_optional_nested():
    chunk = CompleteChunk(
        "r1",
        text="x",
        tokens=3,
        finish_reason=FinishReason.STOP,
        timings=Timings(prefill_ms=1.5, prompt_tokens=9),
        logprobs=(-0.5,),
    )
    assert codec.decode(CompleteChunk, codec.encode(chunk)) == chunk


def test_unknown_fields_are_tolerated():
    assert codec.decode(CompleteRequest, _raw(future_field=[1, 2])) == REQUEST


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"prefix": 5}, "CompleteRequest.prefix: expected str, got int", id="int-as-str"
        ),
        pytest.param(
            {"max_new_tokens": "64"},
            "CompleteRequest.max_new_tokens: expected int",
            id="str-as-int",
        ),
        pytest.param(
            {"max_new_tokens": True}, "max_new_tokens: expected int, got bool", id="bool-as-int"
        ),
        pytest.param(
            {"stop": "sometimes"}, "CompleteRequest.stop: 'sometimes' is not one of", id="bad-enum"
        ),
        pytest.param(
            {"snippets": [{"path": "a"}]},
            "CompleteRequest.snippets[0].text: missing",
            id="nested-missing",
        ),
        pytest.param(
            {"snippets": "abc"}, "CompleteRequest.snippets: expected array", id="str-as-array"
        ),
    ],
)
def test_mistyped_fields_are_named(changes, message):
    with pytest.raises(codec.ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        codec.decode(CompleteRequest, _raw(**changes))


def test_missing_required_field_is_named():
    plain = msgpack.unpackb(codec.encode(REQUEST))
    del plain["uri"]
    with pytest.raises(codec.ProtocolError, match=r"CompleteRequest\.uri: missing required field"):
        codec.decode(CompleteRequest, msgpack.packb(plain))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", msgpack.packb([1, 2])])
def test_garbage_is_a_protocol_error(data):
    with pytest.raises(codec.ProtocolError):
        codec.decode(InfoRequest, data)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"request_id": ""}, "request_id", id="empty-id"),
        pytest.param({"max_new_tokens": 0}, "max_new_tokens", id="zero-tokens"),
        pytest.param({"max_new_tokens": 100_000}, "max_new_tokens", id="huge-tokens"),
        pytest.param({"n": 0}, r"\.n:", id="zero-choices"),
        pytest.param({"temperature": -1.0}, "temperature", id="negative-temperature"),
        pytest.param({"top_p": 0.0}, "top_p", id="zero-top-p"),
        pytest.param({"prefix": "a\x00b"}, "binary", id="nul-bytes"),
        pytest.param({"deadline_ms": -5}, "deadline_ms", id="negative-deadline"),
    ],
)
def test_range_checks(changes, field):
    with pytest.raises(codec.ProtocolError, match=field):
        check_complete_request(dataclasses.replace(REQUEST, **changes))
