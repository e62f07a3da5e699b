"""Watching a ZeroMQ end's socket monitor: dropped connections, redials, refused handshakes.

A ZeroMQ end reads its monitor (no thread) when a receive finds nothing and in ``check()``:
it counts dropped connections in ``drops``, dials again itself where libzmq will not (after a
protocol error, such as a frame over MAXMSGSIZE or a failed handshake), and keeps a refused
security handshake for ``check()`` to raise (see :mod:`.curve`).
"""
from __future__ import annotations

import logging
import struct
from typing import Any

import zmq

from ..errors import TransportError

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_Again = zmq.Again
_ZMQError = zmq.ZMQError
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
#: Events that say libzmq itself is (re)connecting: after them a connecting end need not dial.
_DIALLING = int(zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECT_RETRIED)
#: A connecting end also watches its handshakes: a refused one is an AuthenticationError (see .curve).
_NO_DETAIL = int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_HANDSHAKE_FAILED = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL) | _NO_DETAIL

_EVENT_HEAD = struct.Struct("=hi")  # a monitor event's first frame: 16-bit event, 32-bit value


def parse_monitor_message(frames: list[bytes]) -> dict:
    """A monitor event as pyzmq's ``parse_monitor_message`` gives it, without importing
    ``zmq.utils.monitor`` (which loads zmq.asyncio: a worker's start pays for it)."""
    if len(frames) != 2 or len(frames[0]) != 6:
        raise RuntimeError(f"Invalid event message format: {frames}")
    event, value = _EVENT_HEAD.unpack(frames[0])
    return {"event": event, "value": value, "endpoint": frames[1]}


class _Watched:
    """Mixed into the ZeroMQ ends: reading the monitor their ``_open`` set up."""

    endpoint: str
    drops: int
    _bound: bool
    _curve: bool
    _sock: Any
    _monitor: Any
    _monitor_get: Any
    _refused: TransportError | None
    _unexplained: int
    _failed_handshake: bool
    _redial: bool

    def _watch_connections(self) -> None:
        """Read the monitor: count dropped connections. After a drop libzmq dials again by itself
        (a CONNECT_DELAYED/RETRIED or CONNECTED event follows) except after a protocol error, such
        as a frame over MAXMSGSIZE or a failed handshake: a connecting end whose drop no such
        event follows dials itself."""
        monitor = self._monitor
        if monitor is None or not self._monitor_get(_EVENTS) & _POLLIN:  # type: ignore[misc]  # set with the monitor
            return
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))
            except _Again:
                break
            kind = event["event"]
            if kind & _HANDSHAKE_FAILED:
                self._handshake_failed(kind, event["value"])
            elif kind == _DISCONNECTED:
                if self._failed_handshake:  # the end of a connection that never got through its handshake
                    self._failed_handshake = False
                else:
                    self.drops += 1
                    # A client leaving a bound end is ordinary; a connecting end losing its peer is news.
                    log.log(logging.DEBUG if self._bound else logging.WARNING, "%s: the connection to %s was dropped",
                            self.endpoint, event["endpoint"].decode(errors="replace"))
                self._redial = not self._bound
            else:
                self._redial = False
        if self._redial:
            self._redial = False
            try:
                self._sock.disconnect(self.endpoint)
            except _ZMQError:  # libzmq already forgot it
                pass
            self._sock.connect(self.endpoint)

    def _handshake_failed(self, event: int, value: int) -> None:
        """Note a failed handshake; a security refusal is kept for ``check()``."""
        self._failed_handshake = True
        if event == _NO_DETAIL:
            self._unexplained += 1
        if self._refused is None:
            from .curve import refusal
            self._refused = refusal(event, value, self.endpoint, curve=self._curve, unexplained=self._unexplained)

    def check(self) -> None:
        """Raise AuthenticationError once the peer refused this end's security handshake."""
        self._watch_connections()
        if self._refused is not None:
            raise self._refused
