"""Envelope encoding: msgpack by default, JSON by header or first byte, plain text as input."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.codec import Encoding, decode, decode_reply, decode_task, encode, isolated, sniff
from mesh.envelope import ErrorInfo, Event, Reply, Task, Usage
from mesh.errors import (
    BadSchemaError,
    InvalidJsonError,
    InvalidMsgpackError,
    NoRouteError,
    PayloadTooLargeError,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("encoding", [Encoding.MSGPACK, Encoding.JSON])
@given(value=json_values)
def test_task_round_trips(encoding: Encoding, value: object) -> None:
    task = Task(input=value, context={"k": "v"}, deadline=12.5, path=["a"])
    decoded, seen = decode_task(encode(task, encoding))
    assert (decoded, seen) == (task, encoding)


@pytest.mark.parametrize("encoding", [Encoding.MSGPACK, Encoding.JSON])
def test_reply_round_trips(encoding: Encoding) -> None:
    reply = Reply(
        id="t1",
        output={"x": [1, 2]},
        usage=Usage(input_tokens=3, output_tokens=4, cost_usd=None, calls=1),
        meta={"agent": "a"},
    )
    assert decode_reply(encode(reply, encoding)) == reply


def test_json_header_wins_over_sniffing() -> None:
    task, encoding = decode_task(b'  {"input": 1}', {"Content-Type": "application/json"})
    assert (task.input, encoding) == (1, Encoding.JSON)


def test_text_header_takes_json_looking_body_as_text() -> None:
    task, encoding = decode_task(b'{"input": 1}', {"Content-Type": "text/plain; charset=utf-8"})
    assert (task.input, encoding) == ('{"input": 1}', Encoding.TEXT)


def test_json_with_leading_whitespace_is_sniffed() -> None:
    assert sniff(b'\n  {"input": 1}') is Encoding.JSON


def test_plain_text_becomes_the_input() -> None:
    task, encoding = decode_task("héllo wörld".encode())
    assert (task.input, encoding) == ("héllo wörld", Encoding.TEXT)


def test_empty_body_is_empty_text() -> None:
    task, encoding = decode_task(b"")
    assert (task.input, encoding) == ("", Encoding.TEXT)


def test_text_reply_is_written_as_json() -> None:
    reply = Reply(id="t", output="HI")
    assert json.loads(encode(reply, Encoding.TEXT))["output"] == "HI"


def test_unknown_fields_are_kept() -> None:
    task, _ = decode_task(msgpack.packb({"input": 1, "priority": "high"}))
    assert task.model_dump()["priority"] == "high"
    assert msgpack.unpackb(encode(task))["priority"] == "high"


def test_truncated_msgpack_is_invalid_msgpack() -> None:
    with pytest.raises(InvalidMsgpackError):
        decode_task(msgpack.packb({"input": "x" * 10})[:-3])


def test_binary_garbage_is_invalid_msgpack() -> None:
    with pytest.raises(InvalidMsgpackError):
        decode_task(b"\xc1\xff\xfe")


def test_broken_json_is_invalid_json() -> None:
    with pytest.raises(InvalidJsonError, match="not valid JSON"):
        decode_task(b'{"input": ')


def test_missing_input_is_bad_schema_naming_the_field() -> None:
    with pytest.raises(BadSchemaError, match="input: Field required") as caught:
        decode_task(b'{"inputs": 1}')
    assert caught.value.details == {"errors": [{"field": "input", "problem": "Field required"}]}


def test_msgpack_non_map_is_bad_schema() -> None:
    with pytest.raises(BadSchemaError, match="must be a map"):
        decode_task(msgpack.packb("just a string"))


def test_non_utf8_text_header_is_bad_schema() -> None:
    with pytest.raises(BadSchemaError, match="UTF-8"):
        decode_task(b"\xff\xfe", {"Content-Type": "text/plain"})


def test_oversize_message_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLargeError, match="exceeds the limit of 10"):
        decode_task(b"x" * 11, max_bytes=10)


def test_plain_text_reply_is_bad_schema() -> None:
    with pytest.raises(BadSchemaError, match="not plain text"):
        decode_reply(b"hello")


def test_events_decode_from_json() -> None:
    event = decode(b'{"source": "a", "kind": "b", "data": 1}', Event)
    assert (event.source, event.kind, event.data) == ("a", "b", 1)


def test_error_info_rebuilds_the_same_class() -> None:
    info = ErrorInfo.from_exception(NoRouteError("no label", details={"label": "x"}))
    rebuilt = info.to_exception()
    assert isinstance(rebuilt, NoRouteError)
    assert isinstance(rebuilt, LookupError)
    assert (rebuilt.message, rebuilt.details, rebuilt.retryable) == (
        "no label",
        {"label": "x"},
        False,
    )


def test_unknown_error_code_from_a_newer_peer_is_still_an_error() -> None:
    rebuilt = ErrorInfo(code="from_the_future", message="m").to_exception()
    assert type(rebuilt).__name__ == "MeshError"
    assert rebuilt.message == "m"


def test_usage_adds_up_and_unknown_cost_stays_unknown() -> None:
    a = Usage(input_tokens=1, output_tokens=2, cost_usd=0.5, calls=1)
    b = Usage(input_tokens=10, output_tokens=20, cost_usd=0.25, calls=2)
    assert a + b == Usage(input_tokens=11, output_tokens=22, cost_usd=0.75, calls=3)
    assert (a + Usage(cost_usd=None)).cost_usd is None
    assert (a + b).total_tokens == 33


def test_reply_unwrap_raises_its_error() -> None:
    reply = Reply.failure("t", NoRouteError("x"))
    assert not reply.ok
    with pytest.raises(NoRouteError):
        reply.unwrap()


# -- isolated: the in-process copy --------------------------------------------------------------


def test_isolated_copies_are_not_shared() -> None:
    original = {"count": 1}
    (copy, _), _ = isolated([original, "x"])
    original["count"] = 2
    assert copy == {"count": 1}
    assert isolated((1, (2, 3)))[0] == [1, [2, 3]]  # arrays come back as lists, as by message


def test_isolated_refuses_what_cannot_be_written() -> None:
    with pytest.raises(TypeError):
        isolated(2**64)
    with pytest.raises(TypeError):
        isolated({"when": object()})
