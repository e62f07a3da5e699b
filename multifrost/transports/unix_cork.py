"""When the frames a ``unix://`` end put off leave: a burst of sends costs one system call, and none stays behind.

A send may leave its frame waiting in its connection (``Connection.write(defer=True)``, at most
``CORK_MAX`` frames, then they all go at once) in two cases. The reader is mid-drain (received
messages wait in the inbox): it will receive again, and the receive that finds the inbox empty lets
them go (``flush``). Or the send runs on the event loop of a reader that gave ``soon`` and is not the
first since the last flush (the turn rule, ``turn.Turn``): it waits for a flush queued with ``soon``,
or for the reader's next receive. ``on_loop(None)`` (the reader left) lets what waits go at once,
and so does ``close``.
"""
from __future__ import annotations

from typing import Callable

from ..codec import Payload
from .turn import Turn
from .unix_conn import Connection


class Corks:
    """The connections of one end holding frames put off, and when they leave (``turn``)."""

    __slots__ = ("_held", "_turn", "_gone")

    def __init__(self, gone: Callable[[Connection], None]) -> None:
        self._held: list[Connection] = []
        self._turn = Turn(self.flush)
        self._gone = gone  # the end drops a connection whose write failed

    def on_loop(self, soon: Callable[[Callable[[], None]], object] | None) -> None:
        """Sends in this thread may wait for a flush queued with ``soon`` (None: no more; what waits leaves now)."""
        self._turn.on_loop(soon)
        if soon is None:
            self.flush()

    def write(self, conn: Connection, payload: Payload, mid_drain: bool) -> bool:
        """Send one frame on ``conn``, now or put off (see the module doc); False when the connection broke."""
        defer = self._turn.wait(mid_drain)
        if not defer and self._held:
            self._send_held()
        if not conn.write(payload, defer):
            return False
        if defer and conn not in self._held:
            self._held.append(conn)
        return True

    def flush(self) -> None:
        """Let every frame put off go now; a connection that broke is dropped."""
        self._turn.flushed()
        if self._held:
            self._send_held()

    def _send_held(self) -> None:
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
        self._turn.on_loop(None)
        held, self._held = self._held, []
        for conn in held:
            conn.uncork()
