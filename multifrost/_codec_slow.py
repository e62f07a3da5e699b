"""The slow paths both codecs share: error messages, datetimes and ext types, map keys.

The compiled ``_codec`` imports these from here rather than from the pure-Python twin, so a
process with the compiled codec never loads (or compiles) ``_codec_fallback``.
"""
from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

from msgpack import ExtType

from ._limits import Limits
from .errors import PayloadError, ProtocolError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LEN32_MAX = 2**32 - 1

_B_B = struct.Struct(">BB").pack
_B_H = struct.Struct(">BH").pack
_B_I = struct.Struct(">BI").pack

# ---------------------------------------------------------------- pack errors


class Unsendable(Exception):
    """Internal: ``value`` cannot be packed; the containers add their step on the way out.

    ``detail`` None means "deeper than max_depth" (a cycle, or really deep data).
    ``in_key`` marks a problem with the keys of the dict ``value`` itself.
    """

    def __init__(self, value: object, detail: str | None, in_key: bool = False):
        super().__init__(detail)
        self.value = value
        self.detail = detail
        self.in_key = in_key
        self.steps: list[tuple[object, object, bool]] = []  # (container, key or index, is_index), leaf first


def _format_path(steps: list[tuple[object, object, bool]]) -> str:
    parts = []
    for position, (_, key, is_index) in enumerate(steps):
        if position == 0:
            parts.append(key_string(key))
        elif is_index:
            parts.append(f"[{key}]")
        else:
            parts.append(f"[{key!r}]")
    return "".join(parts) or "top level"


def payload_error(exc: Unsendable, max_depth: int) -> PayloadError:
    """Turn an Unsendable that reached pack_message into the PayloadError the caller sees."""
    steps = exc.steps[::-1]
    value = exc.value
    detail = exc.detail
    if detail is None:
        chain = [container for container, _, _ in steps] + [value]
        seen: set[int] = set()
        for position, container in enumerate(chain):
            if id(container) in seen:
                steps = steps[:position]
                value = container
                detail = "cycle: the value contains itself"
                break
            seen.add(id(container))
        else:
            detail = f"nesting deeper than max_depth={max_depth}"
    return PayloadError(f"cannot send {type(value).__name__} at {_format_path(steps)}: {detail}")


def utf8_detail(exc: UnicodeEncodeError) -> str:
    """Describe why a str cannot be encoded as UTF-8."""
    return f"not encodable as UTF-8 ({exc.reason} at index {exc.start})"


def too_long(kind: str, length: int) -> str:
    """Describe a str/bin/array/map longer than msgpack can frame."""
    return f"{kind} of length {length} is longer than msgpack allows ({_LEN32_MAX})"


def too_long_for(kind: str, length: int, limits: Limits) -> str:
    """Describe a str/bin/array/map the receiver would refuse (or msgpack cannot frame)."""
    if length > _LEN32_MAX:
        return too_long(kind, length)
    name = {"str": "max_str_len", "ext": "max_bin_len"}.get(kind, f"max_{kind}_len")
    return f"{kind} of length {length} is over the receiver's limit {name}={getattr(limits, name)}"


_EXT_HEAD_SIZE = {0xD4: 2, 0xD5: 2, 0xD6: 2, 0xD7: 2, 0xD8: 2, 0xC7: 3, 0xC8: 4, 0xC9: 6}


def checked_ext(value: object, ext: bytes, limits: Limits) -> bytes:
    """``ext`` (a packed ext type), unless its data is longer than the receiver's max_bin_len."""
    length = len(ext) - _EXT_HEAD_SIZE[ext[0]]
    if length > limits.max_bin_len:
        raise Unsendable(value, too_long_for("ext", length, limits))
    return ext


def key_string(key: object) -> str:
    """The string a map key becomes on the wire."""
    return str.__str__(key) if isinstance(key, str) else str(key)


def check_key_collisions(mapping: dict) -> None:
    """Raise Unsendable when two keys of ``mapping`` become the same string on the wire."""
    seen: dict[str, object] = {}
    for key in dict.keys(mapping):
        text = key_string(key)
        if text in seen:
            raise Unsendable(
                mapping, f"keys {seen[text]!r} and {key!r} both become {text!r} on the wire", in_key=True
            )
        seen[text] = key


def timestamp_ext(value: datetime) -> bytes:
    """The msgpack timestamp (ext -1) bytes of an aware datetime, in the smallest of its three forms."""
    if value.utcoffset() is None:
        raise Unsendable(value, "the datetime is naive; attach a tzinfo (e.g. datetime.timezone.utc)")
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    nanoseconds = delta.microseconds * 1000
    if seconds >> 34 == 0:
        data64 = nanoseconds << 34 | seconds
        if data64 >> 32 == 0:
            return b"\xd6\xff" + data64.to_bytes(4, "big")
        return b"\xd7\xff" + data64.to_bytes(8, "big")
    return b"\xc7\x0c\xff" + nanoseconds.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)


def ext_bytes(value: ExtType) -> bytes:
    """The msgpack bytes of an ExtType (fixext when the length allows)."""
    code, data = value
    if type(code) is not int or not -128 <= code <= 127 or not isinstance(data, bytes):
        raise Unsendable(value, "an ExtType needs an int code in [-128, 127] and bytes data")
    length = len(data)
    if length == 1:
        head = b"\xd4"
    elif length == 2:
        head = b"\xd5"
    elif length == 4:
        head = b"\xd6"
    elif length == 8:
        head = b"\xd7"
    elif length == 16:
        head = b"\xd8"
    elif length <= 0xFF:
        head = _B_B(0xC7, length)
    elif length <= 0xFFFF:
        head = _B_H(0xC8, length)
    elif length <= _LEN32_MAX:
        head = _B_I(0xC9, length)
    else:
        raise Unsendable(value, too_long("ext", length))
    return head + (code & 0xFF).to_bytes(1, "big") + data


# ---------------------------------------------------------------- unpack errors and values


def check_data(data: object) -> None:
    """Raise TypeError unless ``data`` is bytes, bytearray or memoryview."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"unpack_message needs bytes, bytearray or memoryview, not {type(data).__name__}")


def datetime_from_timestamp(data: bytes) -> datetime:
    """Decode the data of a msgpack timestamp (ext -1) into an aware UTC datetime."""
    n = len(data)
    if n == 4:
        seconds = int.from_bytes(data, "big")
        nanoseconds = 0
    elif n == 8:
        data64 = int.from_bytes(data, "big")
        seconds = data64 & 0x3FFFFFFFF
        nanoseconds = data64 >> 34
    elif n == 12:
        nanoseconds = int.from_bytes(data[:4], "big")
        seconds = int.from_bytes(data[4:], "big", signed=True)
    else:
        raise ProtocolError(f"invalid timestamp: ext -1 with {n} bytes of data (needs 4, 8 or 12)")
    if nanoseconds > 999_999_999:
        raise ProtocolError(f"invalid timestamp: nanoseconds {nanoseconds} > 999999999")
    try:
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanoseconds // 1000)
    except OverflowError:
        raise ProtocolError(f"timestamp {seconds} s is outside the datetime range") from None


def ext_value(code: int, data: bytes) -> object:
    """The Python value of a msgpack ext: datetime for -1, None for JavaScript's undefined.

    msgpackr packs ``undefined`` as ext 0 with one zero byte (d4 00 00), other encoders
    with no data: any ext 0 reads as None.
    """
    if code == -1:
        return datetime_from_timestamp(data)
    if code == 0:
        return None
    if code < 0:
        raise ProtocolError(f"reserved ext type {code} is not supported")
    return ExtType(code, data)


def truncated(pos: int) -> ProtocolError:
    """The error for data that ends too early."""
    return ProtocolError(f"truncated message: data ends inside the value at offset {pos}")


def over_limit(kind: str, length: int, limit_name: str, limit: int, pos: int) -> ProtocolError:
    """The error for a str/bin/array/map longer than the receiver's limit."""
    return ProtocolError(f"{kind} of length {length} at offset {pos} exceeds {limit_name}={limit}")
