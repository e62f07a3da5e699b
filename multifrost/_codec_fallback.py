"""Pure-Python codec: the reference twin of the compiled ``_codec`` module.

Both write msgpack bytes in one pass over the value (no sanitized copy), make the
same encoding choices as ``msgpack.packb(x, use_bin_type=True, datetime=True)``,
and raise the same errors with the same messages. Both use the slow-path helpers of
``_codec_slow`` (error messages, datetimes, map keys).
"""
from __future__ import annotations

import math
import struct
import sys
from datetime import datetime
from typing import Any, Callable, Literal, overload

from msgpack import ExtType

from ._codec_slow import (
    _B_B,
    _B_H,
    _B_I,
    Unsendable,
    check_data,
    check_key_collisions,
    checked_ext,
    ext_bytes,
    ext_value,
    key_string,
    over_limit,
    payload_error,
    timestamp_ext,
    too_long_for,
    truncated,
    utf8_detail,
)
from ._limits import DEFAULT_LIMITS, Limits, check_max_depth
from ._pieces import Pieces
from .errors import PayloadError, ProtocolError

IMPLEMENTATION = "python"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_B_b = struct.Struct(">Bb").pack
_B_h = struct.Struct(">Bh").pack
_B_i = struct.Struct(">Bi").pack
_B_q = struct.Struct(">Bq").pack
_B_Q = struct.Struct(">BQ").pack
_B_d = struct.Struct(">Bd").pack
_NIL = b"\xc0"
_TRUE = b"\xc3"
_FALSE = b"\xc2"


# ---------------------------------------------------------------- pack


@overload
def pack_message(message: dict[str, Any], *, max_depth: int | None = None, limits: Limits | None = None,
                 gather: Literal[False] = False) -> bytes: ...
@overload
def pack_message(message: dict[str, Any], *, max_depth: int | None = None, limits: Limits | None = None,
                 gather: bool) -> bytes | Pieces: ...
def pack_message(message: dict[str, Any], *, max_depth: int | None = None, limits: Limits | None = None,
                 gather: bool = False) -> bytes | Pieces:
    """Encode one message (a dict) as msgpack, turning values into their wire form on the way.

    ``limits`` are the receiver's decoding limits (default ``DEFAULT_LIMITS``): a value the
    receiver would refuse is not packed; ``max_depth`` overrides ``limits.max_depth``.
    ``gather`` is accepted and has no effect here: this twin always copies (the compiled one
    may return ``Pieces`` that join to the same bytes).
    Raises PayloadError naming the path and type of the first value that cannot be sent.
    """
    if not isinstance(message, dict):
        raise PayloadError(f"a message must be a dict, not {type(message).__name__}")
    if limits is None:
        limits = DEFAULT_LIMITS
    elif not isinstance(limits, Limits):
        raise TypeError(f"limits must be a multifrost.codec.Limits, not {type(limits).__name__}")
    if max_depth is None:
        max_depth = limits.max_depth
    check_max_depth(max_depth, "max_depth")
    out = bytearray()
    try:
        _pack(message, out, 1, max_depth, limits)
    except Unsendable as exc:
        raise payload_error(exc, max_depth) from None
    except RecursionError:
        raise PayloadError(
            f"cannot send dict at top level: nesting too deep for the pure-Python codec; lower max_depth={max_depth}"
        ) from None
    return bytes(out)


def _pack_str_header(out: bytearray, n: int, value: object, limits: Limits) -> None:
    if n > limits.max_str_len:
        raise Unsendable(value, too_long_for("str", n, limits))
    if n < 32:
        out.append(0xA0 | n)
    elif n <= 0xFF:
        out += _B_B(0xD9, n)
    elif n <= 0xFFFF:
        out += _B_H(0xDA, n)
    else:
        out += _B_I(0xDB, n)


def _pack_key(out: bytearray, mapping: dict, key: object, convert: bool, limits: Limits) -> None:
    text: Any = key_string(key) if convert else key
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Unsendable(mapping, f"key {key!r} is {utf8_detail(exc)}", in_key=True) from None
    _pack_str_header(out, len(data), mapping, limits)
    out += data


def _pack(obj: object, out: bytearray, depth: int, max_depth: int, limits: Limits) -> None:
    if obj is None:
        out += _NIL
    elif obj is True:
        out += _TRUE
    elif obj is False:
        out += _FALSE
    elif isinstance(obj, int):
        if obj >= 0:
            if obj < 0x80:
                out.append(obj)
            elif obj <= 0xFF:
                out += _B_B(0xCC, obj)
            elif obj <= 0xFFFF:
                out += _B_H(0xCD, obj)
            elif obj <= 0xFFFFFFFF:
                out += _B_I(0xCE, obj)
            elif obj <= _INT64_MAX:
                out += _B_Q(0xCF, obj)
            else:
                raise Unsendable(obj, "out of the signed 64-bit range [-2**63, 2**63-1]")
        elif obj >= -32:
            out.append(obj & 0xFF)
        elif obj >= -0x80:
            out += _B_b(0xD0, obj)
        elif obj >= -0x8000:
            out += _B_h(0xD1, obj)
        elif obj >= -0x80000000:
            out += _B_i(0xD2, obj)
        elif obj >= _INT64_MIN:
            out += _B_q(0xD3, obj)
        else:
            raise Unsendable(obj, "out of the signed 64-bit range [-2**63, 2**63-1]")
    elif isinstance(obj, float):
        if math.isfinite(obj):
            out += _B_d(0xCB, obj)
        else:
            out += _NIL
    elif isinstance(obj, str):
        try:
            data = obj.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Unsendable(obj, utf8_detail(exc)) from None
        _pack_str_header(out, len(data), obj, limits)
        out += data
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj) if isinstance(obj, memoryview) else obj  # type: ignore[assignment]
        n = len(data)
        if n > limits.max_bin_len:
            raise Unsendable(obj, too_long_for("bin", n, limits))
        if n <= 0xFF:
            out += _B_B(0xC4, n)
        elif n <= 0xFFFF:
            out += _B_H(0xC5, n)
        else:
            out += _B_I(0xC6, n)
        out += data
    elif isinstance(obj, ExtType):
        out += checked_ext(obj, ext_bytes(obj), limits)
    elif isinstance(obj, (list, tuple)):
        if depth > max_depth:
            raise Unsendable(obj, None)
        is_list = isinstance(obj, list)
        n = list.__len__(obj) if is_list else tuple.__len__(obj)  # type: ignore[arg-type]
        item_at: Any = list.__getitem__ if is_list else tuple.__getitem__
        if n > limits.max_array_len:
            raise Unsendable(obj, too_long_for("array", n, limits))
        if n <= 0x0F:
            out.append(0x90 | n)
        elif n <= 0xFFFF:
            out += _B_H(0xDC, n)
        else:
            out += _B_I(0xDD, n)
        for index in range(n):
            try:
                item = item_at(obj, index)
            except IndexError:
                raise RuntimeError("list changed size while it was being packed") from None
            try:
                _pack(item, out, depth + 1, max_depth, limits)
            except Unsendable as exc:
                exc.steps.append((obj, index, True))
                raise
    elif isinstance(obj, dict):
        if depth > max_depth:
            raise Unsendable(obj, None)
        n = dict.__len__(obj)
        if n > limits.max_map_len:
            raise Unsendable(obj, too_long_for("map", n, limits))
        if n <= 0x0F:
            out.append(0x80 | n)
        elif n <= 0xFFFF:
            out += _B_H(0xDE, n)
        else:
            out += _B_I(0xDF, n)
        converted = False
        for key, value in dict.items(obj):
            if type(key) is not str and not converted:
                check_key_collisions(obj)
                converted = True
            _pack_key(out, obj, key, converted, limits)
            try:
                _pack(value, out, depth + 1, max_depth, limits)
            except Unsendable as exc:
                exc.steps.append((obj, key, False))
                raise
    elif isinstance(obj, datetime):
        out += checked_ext(obj, timestamp_ext(obj), limits)
    else:
        raise Unsendable(obj, "unsupported type")


# ---------------------------------------------------------------- unpack


def unpack_message(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> dict:
    """Decode one message; anything but a well-formed map within ``limits`` is a ProtocolError."""
    check_data(data)
    if limits is None:
        limits = DEFAULT_LIMITS
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise ProtocolError("empty message")
    first = data[0]
    if not (0x80 <= first <= 0x8F or first == 0xDE or first == 0xDF):
        raise ProtocolError(f"a message must be a msgpack map; it starts with byte 0x{first:02x}")
    try:
        value, pos = _unpack(data, 0, 1, limits)
    except RecursionError:
        raise ProtocolError("nesting too deep for the pure-Python codec") from None
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} trailing bytes after the message at offset {pos}")
    return value  # type: ignore[return-value]  # a map: its first byte was checked


def _uint(data: bytes, pos: int, size: int) -> int:
    end = pos + size
    if end > len(data):
        raise truncated(pos)
    return int.from_bytes(data[pos:end], "big")


def _sint(data: bytes, pos: int, size: int) -> int:
    end = pos + size
    if end > len(data):
        raise truncated(pos)
    return int.from_bytes(data[pos:end], "big", signed=True)


def _raw(data: bytes, pos: int, n: int) -> bytes:
    end = pos + n
    if end > len(data):
        raise truncated(pos)
    return data[pos:end]


def _unpack(data: bytes, pos: int, depth: int, limits: Limits) -> tuple[object, int]:
    """Decode the value at ``pos``; return it and the offset after it (one frame per nesting level)."""
    if pos >= len(data):
        raise truncated(pos)
    start = pos
    b = data[pos]
    pos += 1
    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0xA0 <= b <= 0xBF:
        return _str(data, pos, b & 0x1F, start, limits)
    if b == 0xC0:
        return None, pos
    if b == 0xC2:
        return False, pos
    if b == 0xC3:
        return True, pos
    if 0xCC <= b <= 0xCF:
        size = 1 << (b - 0xCC)
        return _uint(data, pos, size), pos + size
    if 0xD0 <= b <= 0xD3:
        size = 1 << (b - 0xD0)
        return _sint(data, pos, size), pos + size
    if b == 0xCA or b == 0xCB:
        size = 4 if b == 0xCA else 8
        value = struct.unpack(">f" if size == 4 else ">d", _raw(data, pos, size))[0]
        return (value if math.isfinite(value) else None), pos + size
    if 0xD9 <= b <= 0xDB:
        size = 1 << (b - 0xD9)
        return _str(data, pos + size, _uint(data, pos, size), start, limits)
    if 0xC4 <= b <= 0xC6:
        size = 1 << (b - 0xC4)
        n = _uint(data, pos, size)
        if n > limits.max_bin_len:
            raise over_limit("bin", n, "max_bin_len", limits.max_bin_len, start)
        pos += size
        return _raw(data, pos, n), pos + n
    if 0x90 <= b <= 0x9F or b == 0xDC or b == 0xDD:
        if b <= 0x9F:
            n = b & 0x0F
        else:
            size = 2 if b == 0xDC else 4
            n = _uint(data, pos, size)
            pos += size
        _container_checks("array", n, 1, data, pos, start, depth, limits)
        items = []
        for _ in range(n):
            item, pos = _unpack(data, pos, depth + 1, limits)
            items.append(item)
        return items, pos
    if 0x80 <= b <= 0x8F or b == 0xDE or b == 0xDF:
        if b <= 0x8F:
            n = b & 0x0F
        else:
            size = 2 if b == 0xDE else 4
            n = _uint(data, pos, size)
            pos += size
        _container_checks("map", n, 2, data, pos, start, depth, limits)
        result = {}
        for _ in range(n):
            key_pos = pos
            key, pos = _unpack(data, pos, depth + 1, limits)
            if type(key) is str:
                key = sys.intern(key)
            elif type(key) is list or type(key) is dict:
                raise ProtocolError(f"unhashable map key of type {type(key).__name__} at offset {key_pos}")
            result[key], pos = _unpack(data, pos, depth + 1, limits)
        return result, pos
    if 0xD4 <= b <= 0xD8:
        n = 1 << (b - 0xD4)
    elif 0xC7 <= b <= 0xC9:
        size = 1 << (b - 0xC7)
        n = _uint(data, pos, size)
        pos += size
    else:
        raise ProtocolError(f"invalid msgpack byte 0x{b:02x} at offset {start}")
    if n > limits.max_bin_len:
        raise over_limit("ext", n, "max_bin_len", limits.max_bin_len, start)
    code = _sint(data, pos, 1)
    pos += 1
    return ext_value(code, _raw(data, pos, n)), pos + n


def _str(data: bytes, pos: int, n: int, start: int, limits: Limits) -> tuple[str, int]:
    if n > limits.max_str_len:
        raise over_limit("str", n, "max_str_len", limits.max_str_len, start)
    raw = _raw(data, pos, n)
    try:
        return raw.decode("utf-8"), pos + n
    except UnicodeDecodeError:
        raise ProtocolError(f"invalid UTF-8 in the str at offset {start}") from None


def _container_checks(
    kind: str, n: int, per_item: int, data: bytes, pos: int, start: int, depth: int, limits: Limits
) -> None:
    if depth > limits.max_depth:
        raise ProtocolError(f"nesting deeper than max_depth={limits.max_depth} at offset {start}")
    limit = limits.max_array_len if kind == "array" else limits.max_map_len
    if n > limit:
        raise over_limit(kind, n, f"max_{kind}_len", limit, start)
    if n * per_item > len(data) - pos:
        raise truncated(pos)


# ---------------------------------------------------------------- receive


def bytes_to_fill(size: int) -> tuple[memoryview, Callable[[], bytes]]:
    """``(view, done)``: a writable memoryview of ``size`` bytes, and ``done()`` returning them as
    bytes once filled (here a copy of a bytearray; the compiled twin fills the bytes itself)."""
    if size < 2:
        raise ValueError(f"bytes_to_fill needs a size of 2 or more, not {size}")
    buffer = bytearray(size)
    return memoryview(buffer), lambda: bytes(buffer)
