"""ZeroMQ transports: ``tcp://``, ``ipc://`` and ``inproc://`` with DEALER parent and ROUTER child.

Framing (the Multifrost v4 wire contract): the parent sends ``[b"", payload]``; the child
receives ``[identity, b"", payload]`` and replies ``[identity, b"", payload]``. The child
also accepts ``[identity, payload]`` and the parent also accepts ``[payload]``; any other
shape is dropped with one log line (logger ``multifrost.transports``).

Readiness: ``fileno()`` is the socket's ``ZMQ_FD``. It is edge-triggered: it signals that
the socket's state may have changed, and any send or receive may consume the signal. The
end keeps the rule of :mod:`multifrost.transports.base` itself: after each send (or, for a
reader that gave ``soon``, once for a run of sends) it reads ``ZMQ_EVENTS`` (which also
re-arms the descriptor) and, when a message waits, calls the reader registered with
``set_reader``, except while the reader is mid-drain (the last ``recv_nowait`` returned a
message: it calls again, and that call reads ``ZMQ_EVENTS``); ``recv_nowait`` uses ``NOBLOCK``
and, when a send was refused, reads ``ZMQ_EVENTS`` so ``writable`` tells whether room has
appeared since. For a reader that gave ``soon``, ``recv_all`` receives until a receive finds
nothing, which re-arms the descriptor too.

Backpressure: a send is refused (``send_nowait`` -> False, nothing queued) when the peer's
pipe holds ``sndhwm`` (+ the peer's ``rcvhwm``, roughly: ZeroMQ counts both ends) messages,
i.e. when the peer stops reading. The awaitable ``send`` helper then waits on ``fileno()``
without blocking the event loop and raises TimeoutError when its timeout passes; the sync
helper does the same in its thread. The child sets ``ROUTER_MANDATORY``, so a send at the
mark is refused the same way instead of silently dropped, and a send to an identity the
socket does not know (never connected, or gone) raises TransportError.

A bound parent (DEALER) with no connected child cannot send: ``send_nowait`` returns False until a child
connects, and ``fileno()`` signals when one does. A connected end whose peer goes away keeps its queue
and reconnects on its own (ZeroMQ reconnect); a new child bound at the same endpoint then receives the
parent's next messages. Messages in flight when the connection dies (including ones sent before ZeroMQ
notices) are lost with it: the RPC layer above must time out and retry, not assume delivery.

``max_message_size`` sets ``ZMQ_MAXMSGSIZE``: a peer sending a larger frame is disconnected
by ZeroMQ (what was in flight on that connection is lost). ZeroMQ does not enforce it on
``inproc://`` (no decoder there).

Dropped connections (tcp, ipc; :mod:`.zeromq_monitor`): each end watches its socket's monitor for
``EVENT_DISCONNECTED`` (read in ``recv_nowait``, no thread) and counts them in ``drops``.
A connecting end also watches for failed security handshakes (``EVENT_HANDSHAKE_FAILED_*``):
``check()`` then raises AuthenticationError; such a connection is dialled again but is not a drop.
libzmq never reconnects a connection it dropped for a protocol error (a frame over
``MAXMSGSIZE`` is one), so a connecting end re-establishes its connection itself.

``close()`` uses LINGER 0 (unsent messages are discarded). ZeroMQ closes listeners in its I/O thread, a
moment after ``close()`` returns, so a new bind of an endpoint this process has just released retries
briefly on "address in use". Closing a bound ipc end removes its socket file (libzmq leaves it). Binding an
ipc path another socket is bound to does not fail: libzmq replaces the file, and the older socket stops
getting new connections.
"""
from __future__ import annotations

import errno
import logging
import time
from typing import Callable

import zmq
from zmq.backend import Socket as _BaseSocket

from ..codec import Payload
from ..errors import TransportClosed, TransportError
from . import Curve, Endpoint
from .base import ChildEnd, ParentEnd
from .zeromq_cork import SendCork
from .zeromq_context import _bind, _released, _remove_socket_file, _shared_context, shutdown, RELEASE_GRACE
from .zeromq_monitor import _DIALLING, _DISCONNECTED, _HANDSHAKE_FAILED, _Watched

__all__ = ["ZmqParentEnd", "ZmqChildEnd", "shutdown", "_shared_context"]

log = logging.getLogger(__name__)

# Plain ints, not pyzmq's enums: enum arithmetic costs microseconds on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_RCVMORE = int(zmq.RCVMORE)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_Again = zmq.Again
_ZMQError = zmq.ZMQError


class _ZmqEnd(_Watched):
    """Socket setup, bind/connect, fileno and close shared by both ZeroMQ ends."""

    coalesces = True  # see transports.base._End

    _wake_waiters: Callable[[], None]  # from _End, which each concrete end also derives from
    _reader: Callable[[], object] | None  # from _End: who to wake when a send hides a message
    _soon: Callable[[Callable[[], None]], object] | None  # from _End: runs a put-off look (see set_reader)

    def _open(self, socket_type: int, endpoint: Endpoint, bind: bool,
              sndhwm: int, rcvhwm: int, max_message_size: int, curve: Curve | None = None) -> None:
        self._closed = False
        self._curve = curve is not None
        self._zap_domain: str | None = None
        self._refused: TransportError | None = None  # why the peer refused our handshake
        self._unexplained = 0  # handshakes that failed without detail
        self._failed_handshake = False  # the connection being set up failed its handshake
        self._monitor = None
        self._redial = False  # a dropped connection that libzmq has not started to dial again
        self._send_refused = False
        self._draining = False  # the last recv_nowait returned a message: the reader will call again
        self._unchecked = False  # a send since the last look at EVENTS or receive that found nothing
        self._look_queued = False  # _settle is queued with soon
        self._bound = bind
        self.endpoint = str(endpoint)
        sock = _shared_context().socket(socket_type)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, sndhwm)
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
            if endpoint.scheme == "tcp" and ":" in (endpoint.host or ""):
                sock.setsockopt(zmq.IPV6, 1)
            if socket_type == zmq.ROUTER:
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            if curve is not None:
                from .curve import apply
                self._zap_domain = apply(sock, curve, bind=bind)
            if endpoint.scheme != "inproc":  # watched before connecting: a first handshake may fail at once
                watched = _DISCONNECTED if bind else _DISCONNECTED | _DIALLING | _HANDSHAKE_FAILED
                self._monitor = sock.get_monitor_socket(watched)
            if bind:
                self.endpoint = _bind(sock, endpoint)
            else:
                sock.connect(self.endpoint)
        except _ZMQError as exc:
            self._release_zap()
            if self._monitor is not None:
                self._monitor.close(linger=0)
            sock.close(linger=0)
            action = "bind" if bind else "connect"
            raise TransportError(f"cannot {action} {endpoint}: {exc}") from exc
        self._sock = sock
        self._monitor_get = _BaseSocket.get.__get__(self._monitor) if self._monitor is not None else None
        self.drops = 0
        self._fd = sock.getsockopt(zmq.FD)
        # pyzmq's Cython methods, bound directly: the Python-level wrappers of zmq.Socket
        # (routing ids, groups, enum results) cost about a microsecond a call.
        self._recv = _BaseSocket.recv.__get__(sock)
        self._send = _BaseSocket.send.__get__(sock)
        self._get = _BaseSocket.get.__get__(sock)

    def fileno(self) -> int:
        if self._closed:
            raise TransportClosed(f"transport end {self.endpoint} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writable(self) -> bool:
        return not self._send_refused

    def _error(self, exc: Exception) -> TransportError:
        if self._closed:
            return TransportClosed(f"transport end {self.endpoint} is closed")
        return TransportError(f"{self.endpoint}: {exc}")

    def _ready(self) -> int:
        """Whether a message waits (EVENTS, which also re-arms the edge-triggered fd).

        Cheaper than a NOBLOCK recv that raises zmq.Again; notes room to send as well.
        """
        try:
            events = self._get(_EVENTS)
        except _ZMQError as exc:
            raise self._error(exc) from exc
        if events & _POLLOUT:
            self._send_refused = False
        return events & _POLLIN

    def _after_send(self) -> None:
        """A send takes the descriptor's edge with it: if a message now waits, tell the reader
        (unless it is mid-drain: its next ``recv_nowait`` finds the message and re-arms the edge).
        With ``soon`` (see ``set_reader``), one look at EVENTS (a system call) serves a run of sends."""
        if self._reader is None or self._draining:
            return
        if self._soon is None:
            if self._get(_EVENTS) & _POLLIN:
                self._reader()
            return
        self._unchecked = True
        if not self._look_queued:
            self._look_queued = True
            self._soon(self._settle)

    def _settle(self) -> None:
        """The look a run of sends put off (none when a receive that found nothing re-armed the fd since)."""
        self._look_queued = False
        if self._unchecked and not self._closed and self._reader is not None:
            self._unchecked = False
            if self._ready():
                self._reader()

    def _release_zap(self) -> None:
        if self._zap_domain is not None:
            from .curve import release
            release(self._zap_domain)
            self._zap_domain = None

    def _drop(self, frames: list[bytes], expected: str, more: bool) -> None:
        """Drop a message of the wrong shape (``more``: parts of it are still to be read)."""
        while more:
            frame = self._recv(0, False)
            frames.append(frame.bytes)
            more = frame.more
        log.warning("%s: dropped a message of %d frame(s) (sizes %s); expected %s",
                    self.endpoint, len(frames), [len(f) for f in frames[:4]], expected)

    def close(self, linger: float = 0.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_waiters()
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._release_zap()
        self._sock.close(linger=int(linger * 1000))
        if self._bound:
            _released[self.endpoint] = time.monotonic() + RELEASE_GRACE
            if self.endpoint.startswith("ipc://"):
                _remove_socket_file(self.endpoint[len("ipc://"):])


class ZmqParentEnd(_ZmqEnd, ParentEnd):
    """The parent end: a DEALER socket."""

    def __init__(self, endpoint: Endpoint, *, bind: bool, sndhwm: int, rcvhwm: int,
                 max_message_size: int, curve: Curve | None = None) -> None:
        ParentEnd.__init__(self)
        self._open(zmq.DEALER, endpoint, bind, sndhwm, rcvhwm, max_message_size, curve)
        self._cork = SendCork(self._send_at_once)  # a burst of sends on the reader's loop leaves together

    def set_reader(self, callback: Callable[[], object] | None,
                   soon: Callable[[Callable[[], None]], object] | None = None) -> None:
        super().set_reader(callback, soon)
        self._cork.on_loop(soon)

    def close(self, linger: float = 0.0) -> None:
        self._cork.drop()
        super().close(linger)

    def send_nowait(self, payload: Payload) -> bool:
        return self._cork.send(payload if isinstance(payload, bytes) else bytes(payload))  # no gathering here

    def _ready(self) -> int:
        ready = super()._ready()
        if not self._send_refused and self._cork.refused:  # room: what the cork kept goes now
            self._cork.flush()
        return ready

    def _send_at_once(self, payload: bytes) -> bool:
        try:
            self._send(b"", _MORE_NOBLOCK)
            self._send(payload, _NOBLOCK)
        except _Again:  # at the mark (or the pipe went away between the frames: libzmq dropped the part)
            self._send_refused = True
            self._after_send()
            return False
        except _ZMQError as exc:
            raise self._error(exc) from exc
        self._send_refused = False
        self._after_send()
        return True

    def recv_nowait(self) -> bytes | None:
        while self._ready():
            try:
                first = self._recv(_NOBLOCK)
            except _Again:
                self._draining = False
                return None
            except _ZMQError as exc:
                self._draining = False
                raise self._error(exc) from exc
            self._draining = True
            payload = self._rest(first)
            if payload is not None:
                return payload
        self._draining = False
        self._watch_connections()
        return None

    def recv_all(self) -> list[bytes]:
        """Every payload ready now. A reader on an event loop (it gave ``soon``) takes replies in
        batches: it receives until a receive finds nothing, so libzmq looks at its mailbox (a system
        call) once for the lot instead of once a message (EVENTS before each receive); a reader that
        takes one at a time keeps the looks, as the receive that finds nothing raises zmq.Again,
        which costs more than a look."""
        self._cork.flush()  # what the loop's sends put off goes before the reader waits again
        payloads = self._until_again() if self._soon is not None else super().recv_all()
        self._unchecked = False  # the last look, or the receive that found nothing, re-armed fileno()
        return payloads

    def _until_again(self) -> list[bytes]:
        """NOBLOCK receives until one raises zmq.Again (see ``recv_all``)."""
        recv, rest, payloads = self._recv, self._rest, []
        while True:
            try:
                first = recv(_NOBLOCK)
            except _Again:
                break
            except _ZMQError as exc:
                raise self._error(exc) from exc
            payload = rest(first)
            if payload is not None:
                payloads.append(payload)
        if self._send_refused:
            self._ready()  # for ``writable``: room may have appeared since the refusal
        self._watch_connections()
        return payloads

    def _rest(self, first: bytes) -> bytes | None:
        """The payload of the message whose first frame is ``first``; None when its shape is wrong (dropped).

        Copies, not Frames: each Frame lets go of the GIL once more when freed, and with
        threads waiting for it every letting go hands the GIL (and the CPU) over."""
        get = self._get
        if not get(_RCVMORE):
            return first
        second = self._recv(0)
        more = get(_RCVMORE)
        if not more and not first:
            return second
        self._drop([first, second], "[b'', payload] or [payload]", more)
        return None


class ZmqChildEnd(_ZmqEnd, ChildEnd):
    """The child end: a ROUTER socket with ROUTER_MANDATORY."""

    def __init__(self, endpoint: Endpoint, *, bind: bool, sndhwm: int, rcvhwm: int,
                 max_message_size: int, curve: Curve | None = None) -> None:
        ChildEnd.__init__(self)
        self._peers: set[bytes] = set()
        self._open(zmq.ROUTER, endpoint, bind, sndhwm, rcvhwm, max_message_size, curve)

    def send_nowait(self, peer: bytes, payload: Payload) -> bool:
        payload, send = payload if isinstance(payload, bytes) else bytes(payload), self._send  # no gathering here
        try:
            send(peer, _MORE_NOBLOCK)
        except _Again:
            self._send_refused = True
            self._after_send()
            return False
        except _ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH and not self._closed:
                self._peers.discard(peer)
                raise TransportError(f"{self.endpoint}: unknown peer {peer!r}") from None
            raise self._error(exc) from exc
        send(b"", _SNDMORE)
        send(payload)
        self._send_refused = False
        self._after_send()
        return True

    def recv_nowait(self) -> "tuple[bytes, bytes] | None":
        recv = self._recv
        while self._ready():
            try:
                frame = recv(_NOBLOCK, False)  # Frames: each knows whether more parts follow
            except _Again:
                self._draining = False
                return None
            except _ZMQError as exc:
                self._draining = False
                raise self._error(exc) from exc
            self._draining = True
            peer = frame.bytes
            frames = [peer]
            more = frame.more
            if more:
                frame = recv(0, False)
                second, more = frame.bytes, frame.more
                if not more:
                    self._peers.add(peer)
                    return peer, second
                frames.append(second)
                if not second:
                    frame = recv(0, False)
                    payload, more = frame.bytes, frame.more
                    if not more:
                        self._peers.add(peer)
                        return peer, payload
                    frames.append(payload)
            self._drop(frames, "[identity, b'', payload] or [identity, payload]", more)
        self._draining = False
        self._watch_connections()
        return None

    @property
    def peers(self) -> "frozenset[bytes]":
        return frozenset(self._peers)
