"""What a sync caller waits on: its slot for the outcome, woken by releasing a lock; the followers
asleep on theirs; and the supervisor's variant of the slot, which also writes to a wake-up pipe
(it waits on descriptors, not on the slot)."""
from __future__ import annotations

import os
import threading
import time
from collections import deque

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



class Followers:
    """The sync callers asleep as followers until their reply is in or the lead is handed to
    them; the channel's lock guards it.

    Replies are handed out in a relay: of the followers whose replies one pass brought in, only
    the first is woken; each woken caller wakes the next as it leaves (``pass_on``). Waking them
    all at once had each one wake only to wait for the GIL, several thread switches a call.
    """

    __slots__ = ("_asleep", "_queued", "_relay")

    def __init__(self) -> None:
        self._asleep: dict[Waiter, None] = {}
        self._queued: deque[Waiter] = deque()  # done, not asleep, waiting for the relay to wake them
        self._relay: Waiter | None = None  # the woken caller that still has to wake the next

    def __bool__(self) -> bool:
        return bool(self._asleep)

    def add(self, waiter: Waiter) -> threading.Lock:
        """``waiter``'s caller goes to sleep; the lock it waits on."""
        self._asleep[waiter] = None
        return waiter.sleep()

    def leave(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out without waking it (its wait ended by itself); False: it was not asleep."""
        if not waiter.sleeping:
            return False
        waiter.sleeping = False
        del self._asleep[waiter]
        return True

    def wake(self, waiter: Waiter) -> None:
        """Its outcome is in: wake ``waiter`` if it sleeps, now or, while the relay runs, in its turn."""
        if self.leave(waiter):
            if self._relay is None:
                self._relay = waiter
                waiter.wake.release()  # type: ignore[union-attr]  # a sleeping waiter has its lock
            else:
                self._queued.append(waiter)

    @property
    def relaying(self) -> bool:
        """A woken caller has still to wake the next (or to end the relay)."""
        return self._relay is not None

    def pass_on(self, waiter: Waiter) -> bool:
        """A done caller leaves: if the relay is its to run, wake the next in turn; if it leaves
        before its turn (a Ctrl-C), take it out of the queue. True when it ended the relay."""
        if self._relay is waiter:
            queued = self._queued
            follower = self._relay = queued.popleft() if queued else None
            if follower is None:
                return True
            follower.wake.release()  # type: ignore[union-attr]
        elif waiter in self._queued:
            self._queued.remove(waiter)
        return False

    def wake_queued(self) -> None:
        """Wake every caller still waiting for its turn in the relay (a failure ends all calls at once)."""
        queued = self._queued
        while queued:
            queued.popleft().wake.release()  # type: ignore[union-attr]

    def wake_next(self) -> None:
        """Wake one, if any, so that it takes the lead."""
        if self._asleep:
            follower, _ = self._asleep.popitem()
            follower.sleeping = False
            follower.wake.release()  # type: ignore[union-attr]


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
