"""The worker's socket: sends from any thread, replies held for peers that are not reading,
output sent before anyone listened, replies of one pass of the reader sent together (over an
end that ``coalesces``), and waking the one reader when a send hid a message.

A ChildEnd is not thread-safe, and replies leave from the loop, from pool threads and from
the watchdog: every socket operation takes ``lock``. Reading is the worker's (its reader,
``ChildWorker._serve_ready``); this module only tells it when to look again: the end calls
``_hidden`` after a send that hid a message (see ``ChildEnd.set_reader``), and the reader
is then scheduled on the loop, or woken through ``wakeup`` from another thread.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Callable, Sequence

from .codec import Payload
from .held import HeldReplies
from .transports import ChildEnd
from .transports.base import Wakeup

if TYPE_CHECKING:
    from .child_loop import ChildLoop, TimerHandle

HELD_RETRY = 0.1  # seconds: held replies are retried on every pass of the reader, and at least this often
CORK_REPLIES = 64  # replies of one pass kept back at most: the kept ones leave when one more comes
EARLY_OUTPUT = 1000  # output lines kept while no parent has been heard from


class ChildIO:
    """One serving worker's end, and what waits to be sent on it."""

    def __init__(self, max_held_bytes: int) -> None:
        self.lock = threading.RLock()
        self.held = HeldReplies(max_held_bytes)  # replies to peers that are not reading
        self.end: ChildEnd | None = None
        self.reading = False  # the loop is in a pass of the reader: it will look again anyway
        self._coalesce = False  # the end coalesces: the loop's replies during a pass wait for its end
        self.gathers = False  # the end takes Pieces (codec): replies may be packed with gather=True
        self._corked: deque[tuple[bytes, Payload]] = deque()  # those replies (appended by the loop only)
        self.wakeup: Wakeup | None = None  # rung by other threads for the reader
        self._early: deque[bytes] = deque(maxlen=EARLY_OUTPUT)
        self._loop: ChildLoop | None = None
        self._loop_thread: int | None = None
        self._reader: Callable[[], None] = _nothing
        self._pass_due = False
        self._retry: TimerHandle | None = None

    def attach(self, end: ChildEnd, loop: ChildLoop, reader: Callable[[], None]) -> None:
        """Serve ``end`` on ``loop`` (its thread calls this); ``reader`` is the reader's pass."""
        self._loop, self._loop_thread, self._reader = loop, threading.get_ident(), reader
        self.wakeup = Wakeup()
        self.end = end
        self._coalesce = end.coalesces
        self.gathers = end.gathers
        end.set_reader(self._hidden)

    def detach(self) -> None:
        """Stop serving: forget the end (it stays open for the runner to close) and the timer."""
        self.uncork()
        end, self.end = self.end, None
        if end is not None:
            end.set_reader(None)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        wakeup, self.wakeup = self.wakeup, None
        if wakeup is not None:
            wakeup.close()

    def take(self) -> tuple[bytes, bytes] | None:
        """The next ``(peer, payload)`` for the reader, or None."""
        end = self.end
        if end is None:
            return None
        with self.lock:
            return end.recv_nowait()

    def pass_started(self) -> None:
        """The reader begins a pass (a scheduled one is now running)."""
        self._pass_due = False

    def clear_wakeup(self) -> None:
        """The wake-up is readable: clear it before the pass that it asks for."""
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup.clear()

    def _hidden(self) -> None:
        """Make the reader look (from any thread): the end says a send hid a message, or output waits."""
        if threading.get_ident() == self._loop_thread:
            if not self.reading and not self._pass_due and self._loop is not None:
                self._pass_due = True
                self._loop.call_soon(self._reader)
        else:
            wakeup = self.wakeup
            if wakeup is not None:
                try:
                    wakeup.ring()
                except OSError:  # closed meanwhile: the worker stopped
                    pass

    # -- sending ------------------------------------------------------------------------------

    def send(self, peer: bytes, payload: Payload) -> None:
        """Send one reply from any thread; hold it while the peer is not reading. On the loop during
        a pass over an end that coalesces, it waits for the pass's end (``uncork``) with the others."""
        end = self.end
        if end is None:
            return
        if self.reading and self._coalesce and threading.get_ident() == self._loop_thread:
            self._corked.append((peer, payload))
            if len(self._corked) > CORK_REPLIES:
                self.uncork()
            return
        with self.lock:
            if self.held.send(end, peer, payload):
                return
        self._retry_held()

    def uncork(self) -> None:
        """Send the replies a pass kept back, in order (the loop as its pass ends, or the watchdog
        as it takes over from a method that holds the loop mid-pass)."""
        corked = self._corked
        if not corked:
            return
        end = self.end
        with self.lock:
            while corked:
                peer, payload = corked.popleft()
                if end is not None:
                    self.held.send(end, peer, payload)
        self._retry_held()

    def _retry_held(self) -> None:
        """From any thread: when replies are held, have the loop retry them soon."""
        if self.held:
            if threading.get_ident() == self._loop_thread:
                self.arm_retry()
            elif self._loop is not None:
                self._loop.call_soon_threadsafe(self.arm_retry)

    def send_output(self, payload: bytes) -> Sequence[bytes]:
        """Send to every parent heard from, after the output kept before it; returns what went
        out now. Kept for the reader's next pass while there is no parent, or while another
        thread holds the socket (it may be logging under the lock, and printed output is how
        logging reaches the parent: waiting for the lock would deadlock)."""
        end = self.end
        if end is None:
            self._early.append(payload)
            return ()
        if not self.lock.acquire(blocking=False):
            self._early.append(payload)
            if end.peers:
                self._hidden()  # a pass sends it
            return ()
        try:
            if not end.peers:
                self._early.append(payload)
                return ()
            self._early.append(payload)  # behind what waited, in order
            return self._send_early(end)
        finally:
            self.lock.release()

    def _send_early(self, end: ChildEnd) -> list[bytes]:
        """Under the lock: send the kept output, one at a time (other threads may add to it meanwhile)."""
        sent = []
        while self._early:
            sent.append(self._early.popleft())
            end.send_all(sent[-1])
        return sent

    def after_pass(self) -> Sequence[bytes]:
        """On the loop, after a pass of the reader: retry held replies; returns early output
        that can go now (every parent heard from gets it)."""
        end = self.end
        if end is None or not (self._early or self.held):
            return ()
        if self.held:
            with self.lock:
                self.held.flush(end)
            self.arm_retry()
        if self._early and end.peers:
            with self.lock:
                return self._send_early(end)
        return ()

    def arm_retry(self) -> None:
        """On the loop: look at held replies again soon, in case no wake-up says there is room."""
        if self.held and self._retry is None and self._loop is not None and self.end is not None:
            self._retry = self._loop.call_later(HELD_RETRY, self._retry_due)

    def _retry_due(self) -> None:
        self._retry = None
        self._reader()


def _nothing() -> None:
    pass
