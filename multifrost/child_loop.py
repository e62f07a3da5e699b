"""A small poll-based loop for a worker with plain methods only, so that it need not import asyncio.

It offers what the child's serving code asks of a loop, under asyncio's names (``ChildLoop``
is that shared interface): reader callbacks on descriptors, ``call_soon``,
``call_soon_threadsafe`` (through a wake-up pipe), ``call_later`` timers, ``is_closed``, and
signal handlers (main thread; the signal's byte also lands in the wake-up pipe, so that a
signal arriving just before ``poll`` cannot be missed). ``run_until`` runs it until a
condition holds or a timeout passes. Only the thread that runs it may call anything but
``call_soon_threadsafe`` and ``is_closed``. A callback that raises is logged; the loop goes on.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import signal
from collections import deque
from time import monotonic
from typing import Any, Callable, Protocol

from .spin import Spinner

log = logging.getLogger(__name__)


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class ChildLoop(Protocol):
    """What ChildWorker and ChildIO use of a loop: asyncio's event loop has it, and so has PollLoop."""

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...
    def remove_reader(self, fd: int) -> bool: ...
    def call_soon(self, callback: Callable[..., object], *args: Any) -> Any: ...
    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any: ...
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle: ...
    def is_closed(self) -> bool: ...


class Timer:
    """A ``call_later`` handle: ``cancel()`` before it is due and it never runs."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class PollLoop:
    """One thread's loop over ``select.poll``; see the module's docstring."""

    def __init__(self, spins: bool = False) -> None:
        """``spins``: wait by spinning a moment before sleeping (``spin.py``), for an end that spins."""
        self._poller = select.poll()
        self._readers: dict[int, tuple[Callable[..., object], tuple]] = {}
        self._ready: deque[tuple[Callable[..., object], tuple]] = deque()
        self._timers: list[tuple[float, int, Timer]] = []  # a heap; the count keeps equal times in order
        self._order = itertools.count()
        self._signals: dict[int, Any] = {}  # signum -> the handler it had before
        self._old_wakeup_fd = -1
        self._closed = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, select.POLLIN)
        self._spinner = Spinner(spins)

    # -- the interface (asyncio's names) ---------------------------------------------------

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        if fd in self._readers:
            self._poller.modify(fd, select.POLLIN)
        else:
            self._poller.register(fd, select.POLLIN)
        self._readers[fd] = (callback, args)

    def remove_reader(self, fd: int) -> bool:
        if self._readers.pop(fd, None) is None:
            return False
        self._poller.unregister(fd)
        return True

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """``call_soon`` from any thread (or a signal handler): wakes the loop."""
        if self._closed:
            raise RuntimeError("the loop is closed")
        self._ready.append((callback, args))
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # the pipe is full: the loop will wake anyway
            pass

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(monotonic() + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def is_closed(self) -> bool:
        return self._closed

    def add_signal_handler(self, signum: int, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop when ``signum`` arrives (main thread only)."""
        if not self._signals:
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        handler = signal.signal(signum, lambda _signum, _frame: self.call_soon_threadsafe(callback))
        self._signals.setdefault(signum, handler)

    def remove_signal_handler(self, signum: int) -> bool:
        """Give ``signum`` back the handler it had before ``add_signal_handler``."""
        if signum not in self._signals:
            return False
        signal.signal(signum, self._signals.pop(signum))
        if not self._signals:
            signal.set_wakeup_fd(self._old_wakeup_fd)
        return True

    def close(self) -> None:
        """Release the wake-up pipe and give signals back; further ``call_soon_threadsafe`` raise."""
        if self._closed:
            return
        for signum in list(self._signals):
            self.remove_signal_handler(signum)
        self._closed = True
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- running ---------------------------------------------------------------------------

    def run_until(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        """Run until ``done()`` (asked after every step) is true or ``timeout`` seconds pass."""
        deadline = None if timeout is None else monotonic() + timeout
        while not done():
            if deadline is not None and monotonic() >= deadline:
                return
            self._step(self._wait(deadline))

    def _wait(self, deadline: float | None) -> float | None:
        """Seconds ``poll`` may block: 0 when callbacks are ready, else until the next timer or the
        deadline (None: until a descriptor is readable)."""
        if self._ready:
            return 0.0
        due = self._timers[0][0] if self._timers else None
        if deadline is not None and (due is None or deadline < due):
            due = deadline
        return None if due is None else max(0.0, due - monotonic())

    def _step(self, wait: float | None) -> None:
        """One poll, then the readers it found ready, the timers due, and the callbacks ready before."""
        ms = None if wait is None else (0 if wait <= 0 else max(1, int(wait * 1000 + 0.999)))
        for fd, _ in self._spinner.poll(self._poller.poll, ms):
            if fd == self._wake_r:
                _drain(fd)
                continue
            reader = self._readers.get(fd)  # None: removed by a callback of this same step
            if reader is not None:
                _run(reader[0], reader[1])
        timers = self._timers
        if timers:
            now = monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    _run(timer.callback, timer.args)
        ready = self._ready
        for _ in range(len(ready)):  # what callbacks add now waits for the next step, as in asyncio
            callback, args = ready.popleft()
            _run(callback, args)


def _run(callback: Callable[..., object], args: tuple) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("callback %r of the worker's loop raised; the loop goes on", callback)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
