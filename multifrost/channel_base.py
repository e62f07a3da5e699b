"""What both call channels share: the pending table, and turning payloads into outcomes.

A channel correlates requests and replies over one ParentEnd. It has exactly one reader
of the end at a time (the sync channel's leader, the async channel's reader callback);
everything read goes through ``_decode`` and ``_deliver`` here, and senders go through
``_put``. The end itself says when a send hid a message (``ParentEnd.set_reader``), so no
sender drains.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from . import extensions, protocol
from . import wire
from .codec import Limits, Payload
from .errors import MultifrostError, ProtocolError
from .transports import ParentEnd
from .wire import DEBUG, wire_debug

if TYPE_CHECKING:
    from .streams import _StreamState

log = logging.getLogger(__name__)

OutputHandler = Callable[[protocol.Message], None]

#: Handed out like output when the end reports a dropped connection (see ``_Channel.on_drop``).
_DROPPED = object()

#: How often a caller blocked by the high-water mark looks at the socket again (seconds).
SEND_RETRY = 0.01


class _Channel:
    """What both flavours share: the pending table and turning payloads into outcomes."""

    def __init__(self, end: ParentEnd, on_output: OutputHandler, limits: Limits | None) -> None:
        self.end = end
        self._on_output = on_output
        self._limits = limits
        self._pending: dict[str | None, Any] = {}
        self._failure: MultifrostError | None = None
        self._drops = end.drops
        #: Called (outside the channel's lock) when the end's connection was dropped.
        self.on_drop: Callable[[], object] | None = None
        # issue 15: what the worker agreed to (from its heartbeat echo), and the streams in flight.
        self.extensions = extensions.NONE
        self.streams: dict[str | None, _StreamState] = {}  # call id -> the stream's state
        #: Where the wire records of this channel go: ``multifrost.wire``, bound to the worker's context.
        self.wire: logging.Logger | logging.LoggerAdapter = wire.log

    def _put(self, payload: Payload) -> bool:
        """Offer one payload to the end (False: refused, nothing queued); a wire record when it went."""
        sent = self.end.send_nowait(payload)
        if sent and wire_debug(DEBUG):
            wire.note(self.wire, "sent", payload, self.end.endpoint)
        return sent

    def _check_drops(self, outputs: list) -> None:
        """After a drain: note a connection the end saw dropped, for ``on_drop``."""
        if self.end.drops != self._drops:
            self._drops = self.end.drops
            outputs.append(_DROPPED)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _parse(self, payload: bytes) -> protocol.Message | ProtocolError:
        """Decode one payload (no shared state: the sync reader does it outside its lock)."""
        try:
            message = protocol.decode(payload, self._limits)
        except ProtocolError as exc:
            log.warning("dropped a message from the worker: %s", exc)
            return exc
        if wire_debug(DEBUG):
            wire.note(self.wire, "received", payload, self.end.endpoint, message.raw)
        return message

    def _route(self, payloads: list[bytes], parsed: list[protocol.Message | ProtocolError], outputs: list) -> None:
        """Deliver what one pass of the reader took (``parsed[i]`` is ``payloads[i]`` decoded)."""
        for payload, message in zip(payloads, parsed):
            if isinstance(message, ProtocolError):
                self._fail_dropped(payload, message)
            else:
                self._deliver(message, outputs)

    def _fail_dropped(self, payload: bytes, exc: ProtocolError) -> None:
        """A reply was dropped: if it names a call that waits, that call fails now, not at its timeout."""
        msg_id, kind = protocol.peek(payload)
        if self.streams and msg_id is not None and msg_id in self.streams:  # issue 15: a stream that lost a message fails
            self._end_stream(msg_id, ProtocolError(f"a message of the stream was dropped: {exc}"))
        elif kind in (protocol.RESPONSE, protocol.ERROR, protocol.HEARTBEAT):
            waiter = self._pending.pop(msg_id, None)
            if waiter is not None:
                self._fail(waiter, ProtocolError(f"the worker's reply was dropped: {exc}"))

    def _deliver(self, message: protocol.Message, outputs: list) -> None:
        """Route one inbound message: a reply to its waiter, output to the handler."""
        kind = message.type
        if self.streams and message.id in self.streams:  # issue 15 hook: items and end of a stream
            stream = self.streams[message.id] if kind == protocol.STREAM_ITEM else self.streams.pop(message.id)
            waiter = stream.deliver(message)
            if waiter is not None:
                self._resolve(waiter, message)
        elif kind in (protocol.RESPONSE, protocol.ERROR, protocol.HEARTBEAT):
            waiter = self._pending.pop(message.id, None)
            if waiter is None:
                log.debug("dropped a %s for unknown request %s (late or timed out)", kind, message.id)
            else:
                self._resolve(waiter, message)
        elif kind in (protocol.STDOUT, protocol.STDERR):
            outputs.append(message)
        else:
            log.debug("ignored a %s message from the worker", kind)

    def _hand_out(self, outputs: list) -> None:
        for message in outputs:
            try:
                if message is _DROPPED:
                    if self.on_drop is not None:
                        self.on_drop()
                else:
                    self._on_output(message)
            except Exception:
                log.exception("the output handler raised")

    def _end_stream(self, msg_id: str | None, error: MultifrostError) -> None:
        """issue 15: fail one stream (a lost message, the worker gone)."""
        waiter = self.streams.pop(msg_id).fail(error)
        if waiter is not None:
            self._fail(waiter, error)

    def _resolve(self, waiter: Any, message: protocol.Message) -> None:
        raise NotImplementedError

    def _fail(self, waiter: Any, error: MultifrostError) -> None:
        raise NotImplementedError

    def _fail_pending(self, error: MultifrostError, final: bool) -> None:
        """Fail every call and stream in flight with ``error``; ``final``: later calls too."""
        if final:
            self._failure = error
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            self._fail(waiter, error)
        for msg_id in list(self.streams):
            self._end_stream(msg_id, error)

