"""When the frames a ``unix://`` end put off leave: a burst of sends costs one system call, and none stays behind.

A send may leave its frame waiting in its connection (``Connection.write(defer=True)``, at most
``CORK_MAX`` frames, then they all go at once) in two cases. The reader is mid-drain (received
messages wait in the inbox): it will receive again, and the receive that finds the inbox empty lets
them go (``flush``). Or the send runs on the event loop of a reader that gave ``soon``
(``set_reader``) and is not the first since the last flush: the first of a burst goes at once (a
lone call pays for no extra turn of the loop, and the peer starts on a burst before it ends), the
next wait, and the first of those queues ``flush`` with ``soon``, which runs before the loop next
waits (or the reader's next receive lets them go sooner). A send from any other thread, or once the
reader's loop is closed, is never put off; ``on_loop(None)`` (the reader left) lets what waits go at
once, and so does ``close``.
"""
from __future__ import annotations

import threading
from typing import Callable

from .unix_conn import Connection

_get_ident = threading.get_ident


class Corks:
    """The connections of one end holding frames put off, and the flush queued on the reader's loop."""

    __slots__ = ("_held", "_soon", "_thread", "_queued", "_went", "_gone")

    def __init__(self, gone: Callable[[Connection], None]) -> None:
        self._held: list[Connection] = []
        self._soon: Callable[[Callable[[], None]], object] | None = None
        self._thread = -1  # the reader's loop thread (sends there wait for the queued flush)
        self._queued = False  # a flush is queued with _soon
        self._went = False  # a send on the loop went at once since the last flush
        self._gone = gone  # the end drops a connection whose write failed

    def on_loop(self, soon: Callable[[Callable[[], None]], object] | None) -> None:
        """Sends in this thread may wait for a flush queued with ``soon`` (None: no more; what waits leaves now)."""
        self._soon, self._queued = soon, False  # a flush queued with an earlier soon may never run
        self._thread = _get_ident() if soon is not None else -1
        if soon is None:
            self.flush()

    def write(self, conn: Connection, payload: bytes, mid_drain: bool) -> bool:
        """Send one frame on ``conn``, now or put off (see the module doc); False when the connection broke."""
        on_loop = self._thread == _get_ident()
        defer = mid_drain or (on_loop and self._went)
        if not defer:
            if self._held:
                self.flush()
            self._went = on_loop
        elif on_loop and not self._queued:
            soon = self._soon
            assert soon is not None  # _thread is set only with it
            try:
                soon(self._flush_queued)
                self._queued = True
            except RuntimeError:  # the reader's loop is closed: nothing would run the flush
                self.on_loop(None)
                defer = False
        if not conn.write(payload, defer):
            return False
        if defer and conn not in self._held:
            self._held.append(conn)
        return True

    def _flush_queued(self) -> None:
        self._queued = False
        self.flush()

    def flush(self) -> None:
        """Let every frame put off go now; a connection that broke is dropped."""
        self._went = False
        if self._held:
            held, self._held = self._held, []
            for conn in held:
                if not conn.uncork():
                    self._gone(conn)

    def forget(self, conn: Connection) -> None:
        """``conn`` was dropped: what it held is lost with it."""
        if conn in self._held:
            self._held.remove(conn)

    def close(self) -> None:
        """The end closes: what waits leaves as a send would have sent it (a broken connection is closed anyway)."""
        self._soon, self._thread = None, -1
        held, self._held = self._held, []
        for conn in held:
            conn.uncork()
