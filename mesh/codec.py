"""Bytes to envelopes and back: msgpack by default, JSON, or plain text as the input.

How a message is read, in order:

1. its ``Content-Type`` header, when present (``application/json``, ``application/msgpack``,
   ``text/plain``);
2. a body whose first non-blank byte is ``{`` is a JSON document;
3. a body starting with a msgpack map marker is msgpack;
4. any other UTF-8 body is plain text, taken as the task's ``input``.

A reply is written in the encoding of its request (plain-text requests get JSON, the simplest
structured form for a person at a terminal).
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Any

import msgpack
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from mesh.bus.base import Headers
from mesh.envelope import ModelT, Reply, Task, validated
from mesh.errors import BadSchemaError, InvalidJsonError, InvalidMsgpackError, PayloadTooLargeError

__all__ = [
    "CONTENT_TYPE",
    "Encoding",
    "decode",
    "decode_reply",
    "decode_task",
    "encode",
    "isolated",
    "pack",
    "sniff",
]

CONTENT_TYPE = "Content-Type"


class Encoding(StrEnum):
    """How a message body is written; the value is its ``Content-Type``."""

    MSGPACK = "application/msgpack"
    JSON = "application/json"
    TEXT = "text/plain"


_BY_CONTENT_TYPE = {
    "application/msgpack": Encoding.MSGPACK,
    "application/x-msgpack": Encoding.MSGPACK,
    "application/vnd.msgpack": Encoding.MSGPACK,
    "application/json": Encoding.JSON,
    "text/plain": Encoding.TEXT,
}
_JSON_START = ord("{")
_BLANK = b" \t\r\n"


def _is_msgpack_map(first: int) -> bool:
    return 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)


def sniff(data: bytes, headers: Headers | None = None) -> Encoding:
    """The encoding of a body, from its ``Content-Type`` header or its first byte."""
    if headers:
        content_type = headers.get(CONTENT_TYPE) or headers.get(CONTENT_TYPE.lower())
        if content_type:
            known = _BY_CONTENT_TYPE.get(content_type.split(";", 1)[0].strip().lower())
            if known is not None:
                return known
    if not data:
        return Encoding.TEXT
    first = data[0]
    if _is_msgpack_map(first):
        return Encoding.MSGPACK
    if first == _JSON_START or (first in _BLANK and data.lstrip(_BLANK)[:1] == b"{"):
        return Encoding.JSON
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return Encoding.MSGPACK
    return Encoding.TEXT


def decode_task(
    data: bytes, headers: Headers | None = None, *, max_bytes: int | None = None
) -> tuple[Task, Encoding]:
    """Read a task, and the encoding its reply must use.

    Raises:
        PayloadTooLargeError: ``data`` is longer than ``max_bytes``.
        InvalidJsonError, InvalidMsgpackError: The body does not parse.
        BadSchemaError: It parses, but is not a task (e.g. no ``input``).
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise PayloadTooLargeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    encoding = sniff(data, headers)
    if encoding is Encoding.TEXT:
        try:
            return Task(input=data.decode("utf-8")), encoding
        except UnicodeDecodeError as exc:
            raise BadSchemaError("a text/plain task must be UTF-8") from exc
    return _decode(data, encoding, Task), encoding


def decode_reply(data: bytes, headers: Headers | None = None) -> Reply:
    """Read a reply (JSON or msgpack).

    Raises:
        InvalidJsonError, InvalidMsgpackError, BadSchemaError: As for `decode_task`.
    """
    return decode(data, Reply, headers)


def decode(data: bytes, model: type[ModelT], headers: Headers | None = None) -> ModelT:
    """Read any envelope model (reply, event) written as JSON or msgpack.

    Raises:
        InvalidJsonError, InvalidMsgpackError, BadSchemaError: As for `decode_task`.
    """
    encoding = sniff(data, headers)
    if encoding is Encoding.TEXT:
        raise BadSchemaError(
            f"a {model.__name__.lower()} must be a JSON or msgpack object, not plain text"
        )
    return _decode(data, encoding, model)


def encode(model: BaseModel, encoding: Encoding = Encoding.MSGPACK) -> bytes:
    """Write a task or reply; plain text is written as JSON (a reply needs structure)."""
    if encoding is Encoding.MSGPACK:
        return pack(_fields(model))
    return model.model_dump_json().encode()


def _fields(model: BaseModel) -> dict[str, Any]:
    # The model's own field values, as pydantic holds them: packing these directly skips a
    # full model_dump per message; anything msgpack cannot write goes through _plain.
    extra = model.__pydantic_extra__
    return {**model.__dict__, **extra} if extra else model.__dict__


def _plain(value: Any) -> Any:
    """What msgpack cannot write itself (nested models, datetimes, ...), in JSON form."""
    if isinstance(value, BaseModel):
        return _fields(value)
    return to_jsonable_python(value)


_packer = functools.partial(msgpack.packb, default=_plain)


def pack(obj: Any) -> bytes:
    """Write plain values (and models) as msgpack, as an envelope's fields are written.

    Raises:
        TypeError: Something in ``obj`` cannot be written.
    """
    try:
        packed: bytes = _packer(obj)
    except (TypeError, ValueError, OverflowError, PydanticSerializationError) as exc:
        raise TypeError(f"cannot be written as msgpack: {exc}") from exc
    return packed


def isolated(value: Any) -> tuple[Any, int]:
    """A copy of ``value`` as a message would carry it (written as msgpack and read back),
    and the bytes it took: what an in-process hand-over gives instead of a message.

    Raises:
        TypeError: Something in ``value`` cannot be written.
    """
    written = pack(value)
    return msgpack.unpackb(written), len(written)


def _decode(data: bytes, encoding: Encoding, model: type[ModelT]) -> ModelT:
    kind = model.__name__.lower()
    if encoding is Encoding.JSON:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            if any(error["type"] == "json_invalid" for error in exc.errors()):
                raise InvalidJsonError(
                    f"the {kind} is not valid JSON: {exc.errors()[0]['msg']}"
                ) from exc
            raise _bad_schema(kind, exc) from exc
    try:
        obj: Any = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise InvalidMsgpackError(f"the {kind} is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise BadSchemaError(f"a {kind} must be a map, not {type(obj).__name__}")
    try:
        return validated(model, obj)
    except ValidationError as exc:
        raise _bad_schema(kind, exc) from exc


def _bad_schema(kind: str, exc: ValidationError) -> BadSchemaError:
    problems = [
        {"field": ".".join(str(part) for part in error["loc"]) or "(root)", "problem": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return BadSchemaError(f"not a valid {kind}: {summary}", details={"errors": problems})
