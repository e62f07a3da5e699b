"""When the sends a ZeroMQ parent end put off leave: a burst of sends made in one turn of the
reader's event loop wakes ZeroMQ's I/O thread once, instead of once a send.

A send that finds libzmq's pipe idle signals the I/O thread (a system call, then a wake-up of
that thread on another CPU); in a pipelined async caller, sends come one task step apart and the
I/O thread has drained and gone back to sleep between them. So on the reader's loop, a send that
is not the first since the last flush waits (the turn rule, ``turn.Turn``), at most ``CORK_MAX``,
until the turn ends, the reader receives again, or ``CORK_MAX`` wait. A send the socket refuses at its high-water mark
stays first in line, and the end refuses new sends until what waits has gone (each new send
retries it first, and so does any look at the socket that finds room: that look took the
descriptor's edge, so no wake-up would come for it): nothing accepted is lost, and order holds.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from ..errors import TransportError
from .turn import Turn

CORK_MAX = 64  # sends put off at most; one more sends them all


class SendCork:
    """The payloads one end put off, and when they leave; ``send_now(payload) -> bool`` sends
    one (False: refused at the mark), raising what the socket raises."""

    __slots__ = ("_send_now", "_waiting", "_turn", "_refused")

    def __init__(self, send_now: Callable[[bytes], bool]) -> None:
        self._send_now = send_now
        self._waiting: deque[bytes] = deque()
        self._turn = Turn(self._turn_ended)
        self._refused = False  # the socket refused the first of _waiting: new sends retry it first

    def on_loop(self, soon: Callable[[Callable[[], None]], object] | None) -> None:
        """Sends in this thread may wait for a flush queued with ``soon`` (None: no more; what waits goes now)."""
        self._turn.on_loop(soon)
        if soon is None:
            self.flush()

    def send(self, payload: bytes) -> bool:
        """Send ``payload`` now or put it off (True either way); False when refused (nothing kept)."""
        if self._refused and not self.flush():
            return False
        waiting = self._waiting
        if not self._turn.wait():
            if waiting and not self._send_waiting():
                return False  # what waits was refused: this one may not overtake it
            return self._send_now(payload)
        waiting.append(payload)
        if len(waiting) >= CORK_MAX:
            self._send_waiting()  # refused: they stay first in line
        return True

    @property
    def refused(self) -> bool:
        """The socket refused what waits first: it goes when a look at the socket finds room."""
        return self._refused

    def flush(self) -> bool:
        """Send what waits, in order; False when the socket refused one (it and the rest wait)."""
        self._turn.flushed()
        return self._send_waiting()

    def _send_waiting(self) -> bool:
        waiting = self._waiting
        while waiting:
            if not self._send_now(waiting[0]):
                self._refused = True
                return False
            waiting.popleft()
        self._refused = False
        return True

    def _turn_ended(self) -> None:
        try:
            self.flush()
        except TransportError:  # closed or broken: the reader's next receive says so to the channel
            self._waiting.clear()

    def drop(self) -> None:
        """The end closes: what waits is discarded, as ZeroMQ discards what it had not sent (LINGER 0)."""
        self._waiting.clear()
        self._turn.on_loop(None)
        self._refused = False
