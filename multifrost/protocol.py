"""The Multifrost v4 message envelope: app id, message types, constructors, inbound validation.

Transport-agnostic: nothing here imports ZeroMQ or asyncio. Messages are plain dicts
(what the codec packs); ``parse`` turns a decoded inbound dict into a typed ``Message``.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Any, Iterator, TypeVar

import msgpack

from . import heap
from .codec import Limits, Pieces, unpack_message
from .errors import PayloadError, ProtocolError

APP_ID = "comlink_ipc_v4"

CALL = "call"
RESPONSE = "response"
ERROR = "error"
STDOUT = "stdout"
STDERR = "stderr"
HEARTBEAT = "heartbeat"
SHUTDOWN = "shutdown"
MESSAGE_TYPES = frozenset({CALL, RESPONSE, ERROR, STDOUT, STDERR, HEARTBEAT, SHUTDOWN})
# Types of the negotiated extensions (extensions.py): parsed, but only sent to a peer that agreed.
STREAM_ITEM = "stream_item"
CREDIT = "credit"
CANCEL = "cancel"
_KNOWN_TYPES = MESSAGE_TYPES | {STREAM_ITEM, CREDIT, CANCEL}

DEFAULT_NAMESPACE = "default"

_time = time.time
_UUID4 = 0x4 << 76 | 0x2 << 62  # the version and variant bits
_UUID4_KEEP = ~(0xF << 76 | 0x3 << 62)
_LOW = (1 << 48) - 1  # the last group of a UUID: 12 hex digits
_prefix: str  # the first four groups of this process's ids (see _draw)
_counter: Iterator[int]


def _draw() -> None:
    """Ids need to be unique, not secret: a random UUID4 per process (drawn again in a forked
    child) whose last group counts up costs one format per id, no system call and no random draw."""
    global _prefix, _counter
    h = (int.from_bytes(os.urandom(16), "big") & _UUID4_KEEP | _UUID4).to_bytes(16, "big").hex()
    _prefix = "-".join((h[:8], h[8:12], h[12:16], h[16:20], ""))
    _counter = itertools.count(int(h[20:], 16))


_draw()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_draw)


def new_id() -> str:
    """A UUID4-shaped string, unique in this process and, in all likelihood, across processes."""
    return f"{_prefix}{next(_counter) & _LOW:012x}"


def call(function: str, args: list | tuple, namespace: str = DEFAULT_NAMESPACE,
         client_name: str | None = None, msg_id: str | None = None) -> dict:
    """A CALL of ``function(*args)`` in ``namespace``."""
    message = {
        "app": APP_ID,
        "id": msg_id or new_id(),
        "type": CALL,
        "timestamp": _time(),
        "function": function,
        "args": args,
        "namespace": namespace,
    }
    if client_name is not None:
        message["client_name"] = client_name
    return message


def response(msg_id: str | None, result: Any) -> dict:
    """A RESPONSE to request ``msg_id``; ``result`` is always present, even when None."""
    return {"app": APP_ID, "id": msg_id, "type": RESPONSE, "timestamp": _time(), "result": result}


def error(msg_id: str | None, text: str) -> dict:
    """An ERROR answering request ``msg_id``; ``text`` is the message, then any traceback."""
    return {"app": APP_ID, "id": msg_id, "type": ERROR, "timestamp": _time(), "error": text}


def output(stream: str, text: str) -> dict:
    """A STDOUT or STDERR message carrying printed text from a child."""
    if stream not in (STDOUT, STDERR):
        raise ValueError(f"output stream must be {STDOUT!r} or {STDERR!r}, not {stream!r}")
    return {"app": APP_ID, "id": new_id(), "type": stream, "timestamp": _time(), "output": text}


def heartbeat(msg_id: str | None = None, hb_timestamp: float | None = None) -> dict:
    """A HEARTBEAT request (parent side); ``hb_timestamp`` defaults to now."""
    now = _time()
    return {
        "app": APP_ID,
        "id": msg_id or new_id(),
        "type": HEARTBEAT,
        "timestamp": now,
        "metadata": {"hb_timestamp": now if hb_timestamp is None else hb_timestamp},
    }


def heartbeat_echo(request: "Message") -> dict:
    """The child's echo of a HEARTBEAT: same id, same ``hb_timestamp``, plus ``hb_response``."""
    metadata = dict(request.metadata or {})
    metadata["hb_response"] = True
    return {"app": APP_ID, "id": request.id, "type": HEARTBEAT, "timestamp": _time(), "metadata": metadata}


def shutdown() -> dict:
    """A SHUTDOWN: the child stops its loop and exits cleanly."""
    return {"app": APP_ID, "id": new_id(), "type": SHUTDOWN, "timestamp": _time()}


class Message:
    """An inbound message that passed validation; ``raw`` keeps every field as received.

    A plain class, not a dataclass: a worker's start-up need not load ``dataclasses``."""

    __slots__ = ("type", "id", "raw")

    def __init__(self, type: str, id: str | None, raw: dict) -> None:
        self.type, self.id, self.raw = type, id, raw

    def __repr__(self) -> str:
        return f"Message(type={self.type!r}, id={self.id!r}, raw={self.raw!r})"

    @property
    def metadata(self) -> dict | None:
        meta = self.raw.get("metadata")
        return meta if isinstance(meta, dict) else None

    # call
    @property
    def function(self) -> Any:
        return self.raw.get("function")

    @property
    def args(self) -> list:
        args = self.raw.get("args")
        return [] if args is None else args

    @property
    def namespace(self) -> str:
        namespace = self.raw.get("namespace")
        return DEFAULT_NAMESPACE if namespace is None else namespace

    @property
    def client_name(self) -> str | None:
        return self.raw.get("client_name", self.raw.get("clientName"))

    # response / error / output
    @property
    def result(self) -> Any:
        """A missing ``result`` reads as None (older Python peers omit it)."""
        return self.raw.get("result")

    @property
    def error(self) -> str:
        text = self.raw.get("error")
        return text if isinstance(text, str) else repr(text)

    @property
    def output(self) -> str:
        text = self.raw.get("output")
        return text if isinstance(text, str) else ""

    @property
    def hb_timestamp(self) -> float | None:
        meta = self.metadata
        value = meta.get("hb_timestamp") if meta else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse(obj: Any) -> Message:
    """Validate a decoded payload into a Message, or raise ProtocolError saying why.

    Unknown fields are kept in ``raw`` and otherwise ignored. A message of an unknown
    type, or of another app, raises ProtocolError: receivers drop it.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(f"message is not a map but {type(obj).__name__}")
    app = obj.get("app")
    if app != APP_ID:
        raise ProtocolError(f"message app is {app!r}, not {APP_ID!r}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _KNOWN_TYPES:
        raise ProtocolError(f"unknown message type {kind!r}")
    msg_id = obj.get("id")
    if msg_id is not None and not isinstance(msg_id, str):
        raise ProtocolError(f"message id is {type(msg_id).__name__}, not str")
    return Message(kind, msg_id, obj)


def decode(payload: bytes, limits: Limits | None = None) -> Message:
    """One received payload decoded within ``limits`` and validated (see ``parse``)."""
    if len(payload) >= heap.LARGE:
        heap.note_size(len(payload))
    return parse(unpack_message(payload, limits))


_P = TypeVar("_P", bound="bytes | Pieces")  # a packed message, in either form


def check_size(payload: _P, max_message_size: int) -> _P:
    """Refuse, before sending, a message the transport's receiver would drop for its size."""
    size = len(payload)
    if size > max_message_size:
        raise PayloadError(f"cannot send a message of {size} bytes: it is over the transport's "
                           f"max_message_size={max_message_size} (the receiver would drop it)")
    if size >= heap.LARGE:
        heap.note_size(size)
    return payload


_PEEK_LIMIT = 1024  # longest key or id a salvage reads; longer values are skipped unread


def peek(payload: bytes) -> tuple[str | None, str | None]:
    """Best effort, for a message the codec refused: its ``(id, type)`` when the top level is a
    map of this app whose ``id`` and ``type`` can be read, without building any other value."""
    found: dict[str, Any] = {}
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(payload), 1), max_str_len=_PEEK_LIMIT,
                                max_bin_len=_PEEK_LIMIT, max_array_len=0, max_map_len=0, strict_map_key=False)
    try:
        unpacker.feed(payload)
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key in ("app", "id", "type") and key not in found:
                found[key] = unpacker.unpack()
                if len(found) == 3:
                    break
            else:
                unpacker.skip()
    except Exception:  # truncated, not a map, a key past the limits: read what we have
        pass
    msg_id, kind = found.get("id"), found.get("type")
    if found.get("app") != APP_ID or not isinstance(msg_id, str) or not isinstance(kind, str):
        return None, None
    return msg_id, kind
