"""What a sync caller waits on: its slot for the outcome, woken by releasing a lock; and the
supervisor's variant, which also writes to a wake-up pipe (it waits on descriptors, not on the slot)."""
from __future__ import annotations

import os
import threading
import time

from . import protocol


class Waiter:
    """A sync caller's slot: the outcome, and a lock that is released to wake it.

    The lock is made (held) only when the caller first sleeps as a follower: a caller that
    leads, as one calling thread always does, never needs it.
    """

    __slots__ = ("message", "error", "done", "sleeping", "wake")

    def __init__(self) -> None:
        self.message: protocol.Message | None = None
        self.error: BaseException | None = None
        self.done = False
        self.sleeping = False
        self.wake: threading.Lock | None = None

    def sleep(self) -> threading.Lock:
        """Mark the caller as sleeping (under the channel's lock); the lock it then waits on."""
        self.sleeping = True
        wake = self.wake
        if wake is None:
            wake = self.wake = threading.Lock()
            wake.acquire()
        return wake

    def outcome(self) -> protocol.Message:
        if self.error is not None:
            raise self.error
        return self.message  # type: ignore[return-value]  # done without an error: the reply is there


class SignallingWaiter(Waiter):
    """A waiter for a thread that is not waiting on it (the sync supervisor's heartbeat): when
    its outcome arrives it notes the time and writes a byte to ``fd`` to wake that thread.

    ``done`` is a property here only, so ordinary calls pay nothing for it.
    """

    __slots__ = ("fd", "arrived")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.arrived: float | None = None
        super().__init__()

    @property
    def done(self) -> bool:
        return Waiter.done.__get__(self)  # type: ignore[misc,attr-defined]  # the slot's descriptor

    @done.setter
    def done(self, value: bool) -> None:
        Waiter.done.__set__(self, value)  # type: ignore[misc,attr-defined]
        if value:
            self.arrived = time.time()
            try:
                os.write(self.fd, b"x")
            except OSError:
                pass


def read_all(fd: int) -> None:
    """Empty a non-blocking wake-up pipe."""
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
