# SPDX-License-Identifier: Apache-2.0
"""One codec for every message: dataclass <-> msgpack, with strict validation.

Why not cattrs: it coerces (``"5"`` becomes ``5``) and its error texts do not name the field the
way a client author needs. This validator is small, strict and names the path of the bad field
(``snippets[2].text: expected str, got int``). Unknown keys are ignored for forward
compatibility; missing keys without a default are an error.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

import msgpack

from . import messages

T = TypeVar("T")


class ProtocolError(ValueError):
    """A message that does not match its schema. The text names the offending field."""


def encode(message: Any) -> bytes:
    return msgpack.packb(_to_plain(message), use_bin_type=True)


def decode(cls: type[T], data: bytes) -> T:
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"{cls.__name__}: not a msgpack message ({exc})") from None
    return from_plain(cls, raw)


def from_plain(cls: type[T], raw: Any, path: str = "") -> T:
    return _convert(cls, raw, path or cls.__name__)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(messages))


def _convert(tp: Any, raw: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if raw is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _convert(inner, raw, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, raw, path)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(raw, (list, tuple)):
            raise _mistyped(path, "array", raw)
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(raw))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(raw, dict):
            raise _mistyped(path, "map", raw)
        return {
            _convert(key_tp, k, f"{path}.<key>"): _convert(val_tp, v, f"{path}.{k}")
            for k, v in raw.items()
        }
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(raw)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise ProtocolError(f"{path}: {raw!r} is not one of {allowed}") from None
    return _convert_scalar(tp, raw, path)


def _convert_dataclass(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise _mistyped(path, "map", raw)
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            kwargs[f.name] = _convert(hints[f.name], raw[f.name], f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(f"{path}.{f.name}: missing required field")
    return cls(**kwargs)


def _convert_scalar(tp: Any, raw: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        raise _mistyped(path, "bool", raw)
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise _mistyped(path, "int", raw)
    if tp is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        raise _mistyped(path, "float", raw)
    if tp is str:
        if isinstance(raw, str):
            return raw
        raise _mistyped(path, "str", raw)
    raise TypeError(f"{path}: unsupported schema type {tp!r}")  # a bug in messages.py


def _mistyped(path: str, expected: str, raw: Any) -> ProtocolError:
    return ProtocolError(f"{path}: expected {expected}, got {type(raw).__name__}")
