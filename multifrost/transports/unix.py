"""``unix://PATH``: length-prefixed frames over plain Unix stream sockets; no ZeroMQ, no I/O thread.

The thread (or event loop) that calls ``send_nowait`` / ``recv_nowait`` does the socket I/O itself, so a round
trip costs two wake-ups instead of ZeroMQ's four. Framing and writing are in
:mod:`multifrost.transports.unix_conn`, the socket file in ``unix_path``, when the frames a burst of
sends puts off leave (one system call for many) in ``unix_cork``.

Either end may bind (the parent in spawn mode, the child in connect-style use) or connect. A bound end
listens; a parent end has one connection at a time (a newer connection replaces an older one, as a restarted
child's would), a child end keeps one per parent and names it with an identity of its own (ROUTER semantics:
``peers`` are those it has received from). Connecting needs a listener (else TransportError). A connecting end
that loses its connection redials at once and, if nothing listens yet, again on each later send or receive
(there is no background thread to do it meanwhile); a connecting parent keeps up to ``sndhwm`` messages queued
while it has no connection. Messages in flight on a connection that dies are lost with it, as with ZeroMQ.

Readiness: ``fileno()`` is a level-triggered epoll descriptor holding the listener, every connection and a
wake-up rung when queued output drains below the high-water mark: it is readable exactly while there is
something to do in the kernel. Frames already taken into the process wait in an inbox, so a reader drains with
``recv_all`` and a send that takes frames on its way (looking for room) tells the reader (``set_reader``).

Limits: a send is refused when ``sndhwm`` messages already wait in this process for room in the kernel buffer
(which holds more, as ZeroMQ's pipes do); frames are taken from the kernel only when the ones taken before are
handed out (``rcvhwm`` bounds one look). A frame announcing more than ``max_message_size`` bytes drops its
connection; a hang-up mid-frame loses that frame (both logged).

``close(linger)`` lets queued output leave for up to ``linger`` seconds (in the closing thread), then closes;
a bound end removes its socket file. The socket file is made 0600; put it in a private (0700) directory, as
spawn mode does.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import deque
from typing import Callable

from ..codec import Payload
from ..errors import TransportClosed, TransportError
from . import Endpoint
from .base import ChildEnd, ParentEnd, Wakeup
from .unix_conn import Connection
from .unix_cork import Corks
from .unix_path import Listener

log = logging.getLogger(__name__)

_REDIAL_EVERY = 0.002  # seconds between redials driven by sends and receives
_IN = select.EPOLLIN | select.EPOLLRDHUP


class _UnixEnd:
    """Listener, connections, epoll readiness and close, shared by both ends."""

    _is_parent: bool
    drops: int
    spins = True
    gathers = True  # Connection.write sends a Pieces' parts as they are
    _wake_waiters: Callable[[], None]  # from _End, which each concrete end also derives from
    _hidden: Callable[[], None]  # from _End: tell the reader a message waits unannounced

    def _setup(self, endpoint: Endpoint, bind: bool, sndhwm: int, rcvhwm: int, max_message_size: int) -> None:
        self.endpoint = str(endpoint)
        assert endpoint.name is not None  # a unix:// endpoint always has its path
        self._path = endpoint.name
        self._bound = bind
        self._sndhwm = sndhwm or 1 << 62
        self._rcvhwm = rcvhwm or 1 << 62
        self._max = max_message_size
        self._closed = False
        self._send_refused = False
        self._close_lock = threading.Lock()
        self._conns: dict[int, Connection] = {}
        self._only: Connection | None = None  # the one connection read without asking epoll (see _adopt)
        self._inbox: deque = deque()
        self._corks = Corks(self._gone)  # frames put off, and when they leave
        self._looked = False  # the last look at the sockets drained them (see _take)
        self._listener: Listener | None = None
        self._listen_fd = -1
        self._next_dial = 0.0
        self._epoll = select.epoll()
        self._room = Wakeup()
        self._epoll.register(self._room.fd, select.EPOLLIN)
        try:
            if bind:
                self._listen()
            else:
                self._adopt(self._dial(raise_errors=True))
        except BaseException:
            self._epoll.close()
            self._room.close()
            raise

    # -- connections ---------------------------------------------------------------------------

    def _listen(self) -> None:
        try:
            self._listener = Listener(self._path)
        except OSError as exc:
            raise TransportError(f"cannot bind {self.endpoint}: {exc.strerror or exc}") from exc
        self._listen_fd = self._listener.sock.fileno()
        self._epoll.register(self._listen_fd, select.EPOLLIN)

    def _arrived_on(self, conn: Connection) -> Callable[[bytes], None]:
        """Where the whole messages read from ``conn`` go (each end's own)."""
        raise NotImplementedError

    def _connection(self, sock: socket.socket) -> Connection:
        return Connection(sock, self.endpoint, self._max, self._sndhwm, self._room.ring)

    def _dial(self, raise_errors: bool = False) -> Connection | None:
        """Connect to the path; None (TransportError when ``raise_errors``) when nothing listens."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.connect(self._path)
        except OSError as exc:
            sock.close()
            if raise_errors:
                raise TransportError(f"cannot connect to {self.endpoint}: {exc.strerror or exc}") from exc
            return None
        return self._connection(sock)

    def _adopt(self, conn: Connection | None) -> None:
        if conn is None:
            return
        if self._is_parent:
            for old in list(self._conns.values()):
                self._drop(old)
        conn.emit = self._arrived_on(conn)
        self._conns[conn.fd] = conn
        # One connection a look can read before asking epoll: a parent's, or a connecting end's only one.
        self._only = conn if len(self._conns) == 1 and (self._is_parent or not self._bound) else None
        self._epoll.register(conn.fd, _IN)
        self._send_refused = False

    def _drop(self, conn: Connection) -> None:
        """Forget a connection (closed by the peer, broken, or replaced); what it had queued is lost."""
        if self._conns.pop(conn.fd, None) is None:
            return
        self._only = None
        self._corks.forget(conn)
        self._lost(conn)
        try:
            self._epoll.unregister(conn.fd)
        except OSError:
            pass
        conn.close()

    def _lost(self, conn: Connection) -> None:
        """Hook: a connection went away."""

    def _gone(self, conn: Connection) -> None:
        """The connection ended: drop it (counted in ``drops``) and, when connecting, redial at once."""
        self.drops += 1
        self._drop(conn)
        if not self._bound:
            self._next_dial = 0.0
            self._redial()

    def _redial(self) -> Connection | None:
        """A connecting end without a connection: try again, at most every few milliseconds."""
        now = time.monotonic()
        if now < self._next_dial:
            return None
        self._next_dial = now + _REDIAL_EVERY
        conn = self._dial()
        self._adopt(conn)
        return conn

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None  # only a bound end accepts
        for sock in listener.accept_all(self.endpoint):
            self._adopt(self._connection(sock))

    # -- I/O -------------------------------------------------------------------------------------

    def _pump(self) -> bool:
        """One look at the epoll set: accept, read frames into the inbox, note room to send. True when
        every socket read was drained and nothing else happened: no need to look again before the descriptor says so."""
        conn = self._only  # read first without the epoll call; epoll only when it had nothing
        if conn is not None and len(self._inbox) < self._rcvhwm:
            if not conn.read():
                self._gone(conn)
                return False
            if conn.got:
                return conn.short
        drained = True
        for fd, _ in self._epoll.poll(0):
            if fd == self._listen_fd:
                self._accept()
                drained = False
            elif fd == self._room.fd:
                self._room.clear()
                self._send_refused = False
                drained = False
            else:
                conn = self._conns.get(fd)
                if conn is None or len(self._inbox) >= self._rcvhwm:
                    drained = False
                elif not conn.read():
                    self._gone(conn)
                    drained = False
                else:
                    drained = drained and conn.short
        if not self._bound and not self._conns:
            self._redial()
            drained = False
        return drained

    def _look_for_room(self) -> None:
        """A send's look at the sockets (room, a child, a redial): frames it reads wait unannounced; tell the reader."""
        self._pump()
        if self._inbox:
            self._hidden()

    def _send_on(self, conn: Connection, payload) -> bool:
        """Write one frame, maybe put off (``unix_cork``); False (the connection dropped, redialled when
        connecting) when it broke. While received messages wait in the inbox, the user is mid-drain and
        will call ``recv_nowait`` again: a small frame then waits until the inbox is empty."""
        if self._corks.write(conn, payload, bool(self._inbox)):
            return True
        self._gone(conn)
        return False

    def _take(self):
        """The next inbox item after at most one look at the sockets, or None."""
        if self._closed:
            raise self._closed_error()
        inbox = self._inbox
        if not inbox:
            self._corks.flush()
            if self._looked:  # the last look read everything there was: the descriptor
                self._looked = False  # (level-triggered) tells when there is more
                return None
            looked = self._pump()
            if not inbox:
                return None
            self._looked = looked
        return inbox.popleft()

    # -- the interface ------------------------------------------------------------------------------

    def fileno(self) -> int:
        if self._closed:
            raise self._closed_error()
        return self._epoll.fileno()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writable(self) -> bool:
        return not self._send_refused

    def _closed_error(self) -> TransportClosed:
        return TransportClosed(f"transport end {self.endpoint} is closed")

    def _refuse(self) -> bool:
        self._send_refused = True
        return False

    def close(self, linger: float = 0.0) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._wake_waiters()
        self._corks.close()
        until = time.monotonic() + linger if linger > 0 else None
        for conn in list(self._conns.values()):
            conn.close(until)
        self._conns.clear()
        self._inbox.clear()
        if self._listener is not None:
            self._listener.close()
        self._epoll.close()
        self._room.close()


class UnixParentEnd(_UnixEnd, ParentEnd):
    """DEALER semantics: one connection; a connecting end keeps messages queued while it redials."""

    _is_parent = True

    def __init__(self, endpoint: Endpoint, *, bind: bool, sndhwm: int, rcvhwm: int, max_message_size: int) -> None:
        ParentEnd.__init__(self)
        self._waiting: deque = deque()  # sent while a connecting end had no connection
        self._conn: Connection | None = None
        self._setup(endpoint, bind, sndhwm, rcvhwm, max_message_size)

    def send_nowait(self, payload: Payload) -> bool:
        if self._closed:
            raise self._closed_error()
        conn = self._conn
        if conn is None:
            self._look_for_room()  # accept a waiting child (bound) or redial (connecting)
            conn = self._conn
        if conn is not None:
            if conn.queued >= self._sndhwm:
                self._look_for_room()  # room may have appeared since the last look
                if conn.queued >= self._sndhwm:
                    return self._refuse()
            if self._send_on(conn, payload):
                return True
            conn = self._conn  # that connection broke; a connecting end has redialled
            if conn is not None and self._send_on(conn, payload):
                return True
        if self._bound or len(self._waiting) >= self._sndhwm:
            return self._refuse()
        self._waiting.append(payload)
        return True

    def recv_nowait(self) -> bytes | None:
        return self._take()

    def set_reader(self, callback: Callable[[], object] | None,
                   soon: Callable[[Callable[[], None]], object] | None = None) -> None:
        super().set_reader(callback, soon)
        self._corks.on_loop(soon)  # with soon, sends on the reader's loop leave once per turn (unix_cork)

    def recv_all(self) -> list[bytes]:
        """``recv_nowait`` until None, taking what one look brought in at once (a sync call reads here)."""
        take, inbox, items = self._take, self._inbox, []
        while (item := take()) is not None:
            items.append(item)
            items.extend(inbox)
            inbox.clear()
        return items

    def _arrived_on(self, conn: Connection):
        return self._inbox.append

    def _adopt(self, conn: Connection | None) -> None:
        super()._adopt(conn)
        if conn is not None:
            self._conn = conn
            waiting, self._waiting = self._waiting, deque()
            for payload in waiting:
                if not conn.write(payload):
                    break  # _pump notices the broken connection

    def _lost(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None


class UnixChildEnd(_UnixEnd, ChildEnd):
    """ROUTER semantics: one connection per parent, each with an identity of its own."""

    _is_parent = False

    def __init__(self, endpoint: Endpoint, *, bind: bool, sndhwm: int, rcvhwm: int, max_message_size: int) -> None:
        ChildEnd.__init__(self)
        self._by_identity: dict[bytes, Connection] = {}
        self._setup(endpoint, bind, sndhwm, rcvhwm, max_message_size)

    def send_nowait(self, peer: bytes, payload: Payload) -> bool:
        if self._closed:
            raise self._closed_error()
        conn = self._by_identity.get(peer)
        if conn is None:
            raise TransportError(f"{self.endpoint}: unknown peer {peer!r}")
        if conn.queued >= self._sndhwm:
            self._look_for_room()
            if conn.queued >= self._sndhwm:
                return self._refuse()
        if not self._send_on(conn, payload):
            raise TransportError(f"{self.endpoint}: unknown peer {peer!r} (its connection closed)")
        return True

    recv_nowait = _UnixEnd._take  # the child's reader takes every message (and its final None) here: no extra frame

    def _arrived_on(self, conn: Connection):
        identity, known, append = conn.identity, self._by_identity, self._inbox.append

        def arrived(payload: bytes) -> None:
            if identity not in known:
                known[identity] = conn  # a peer once heard from
            append((identity, payload))
        return arrived

    def _lost(self, conn: Connection) -> None:
        self._by_identity.pop(conn.identity, None)

    @property
    def peers(self) -> "frozenset[bytes]":
        return frozenset(self._by_identity)
