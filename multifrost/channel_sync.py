"""The sync call channel: blocking calls from any number of threads over one ParentEnd.

Leader/follower: a calling thread puts its request in the outbox and sends it unless another
thread holds the end (that one sends the outbox before letting go, so no sender ever sleeps
on the end's lock), then waits. The first waiting thread takes the lead and is then the only
reader of the end: it polls the end's descriptor (and a wake-up rung by the end when a send
hid a reply, or by ``interrupt``), takes every reply ready in one pass and hands each to its
waiter. Other threads are followers: they never read the socket and sleep on their own lock
until their reply is in or the lead is handed to them. One thread calling pays no thread
hop. See shared PERFORMANCE.md (design F).
"""
from __future__ import annotations

import logging
import select
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from . import protocol
from .channel_base import SEND_RETRY, OutputHandler, _Channel
from .channel_waiters import Followers, Waiter
from .codec import Limits, Payload
from .errors import CallTimeoutError, MultifrostError, TransportClosed
from .spin import Spinner
from .transports import ParentEnd
from .transports.base import Wakeup

if TYPE_CHECKING:
    from .streams import _StreamState

log = logging.getLogger(__name__)
_DRAIN = object()  # the lead's holder while the supervisor drains the end (no caller leads)


class SyncChannel(_Channel):
    """Blocking calls from any number of threads; the thread that leads is the only reader."""

    def __init__(self, end: ParentEnd, on_output: OutputHandler, limits: Limits | None = None) -> None:
        super().__init__(end, on_output, limits)
        #: Guards the pending table, the streams, the followers and the lead; never held over I/O.
        self._lock = threading.Lock()
        #: Held for each use of the end; whoever lets go of it sends the outbox first (``_flush``).
        self._io = threading.Lock()
        self._outbox: deque = deque()  # (call id or None, waiter or None, payload) not sent yet, in order
        self._stalled = False  # the end refused the outbox's head (high-water mark): the leader retries
        self._leader: object | None = None  # the waiter of the caller that leads (or _DRAIN), None: nobody
        self._closed = False
        self._followers = Followers()
        self._wake: Wakeup | None = Wakeup()
        self._wake_fd = self._wake.fd
        self._poller = select.poll()
        self._poller.register(end.fileno(), select.POLLIN)
        self._poller.register(self._wake_fd, select.POLLIN)
        self._spinner = Spinner(end.spins)  # whoever leads waits on it
        self._later: deque = deque()  # issue 15: ids of streams dropped by finalizers, see post_soon
        end.set_reader(self.interrupt)  # a send that hid a reply wakes whoever leads (or will)

    def submit(self, msg_id: str, payload: Payload, waiter_factory: Callable[[], Waiter] = Waiter) -> Waiter:
        """Register a request and send it (or leave it to the thread that holds the end); its waiter."""
        waiter = waiter_factory()
        self._register(msg_id, waiter, False)
        self._outbox.append((msg_id, waiter, payload))
        self._flush()
        return waiter

    def _register(self, msg_id: str, waiter: Waiter, lead: bool) -> bool:
        """Put ``waiter`` in the pending table; with ``lead``, also take the lead if it is free (True then)."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._pending[msg_id] = waiter
            if lead and self._leader is None:
                self._leader = waiter
                return True
            return False

    def _flush(self) -> None:
        """Send the outbox unless another thread holds the end: it sends the outbox before letting go."""
        outbox, io = self._outbox, self._io
        while outbox and io.acquire(False):
            try:
                sent = self._send_outbox()
            finally:
                io.release()
            if not sent:
                return  # refused: the leader retries

    def _send_outbox(self) -> bool:
        """With the end held: send the outbox in order; False when the end refused its head."""
        outbox = self._outbox
        while outbox:
            msg_id, waiter, payload = outbox[0]
            if self._failure is not None:  # the channel is finished; its end may be closed
                outbox.clear()
                break
            if msg_id is not None and msg_id not in self._pending:  # timed out (or failed) before it went
                outbox.popleft()
                continue
            try:
                sent = self._put(payload)
            except Exception as exc:  # the end is closed or broken: that call fails now
                outbox.popleft()
                self._not_sent(msg_id, waiter, exc)
                continue
            if not sent:
                if not self._stalled:
                    self._stalled = True
                    self.interrupt()  # the leader now retries every SEND_RETRY s
                return False
            outbox.popleft()
        self._stalled = False
        return True

    def _not_sent(self, msg_id: str | None, waiter: Waiter | None, exc: Exception) -> None:
        """A send from the outbox raised: its call fails with that (a message without a reply is logged)."""
        if waiter is None:
            log.debug("a message to the worker was not sent: %s", exc)
            return
        with self._lock:
            if self._pending.pop(msg_id, None) is waiter:
                self._fail(waiter, exc)

    # -- issue 15 hooks: control messages and streams -----------------------------------------

    def post(self, payload: Payload) -> bool:
        """Send a message that expects no reply (CANCEL, CREDIT, a stream's CALL); False when refused."""
        with self._io:
            if self._failure is not None:
                raise self._failure
            sent = self._send_outbox() and self._put(payload)
        self._flush()
        return sent

    def post_soon(self, msg_id: str, payload: Payload) -> None:
        """From a finalizer (a stream garbage-collected): forget stream ``msg_id`` and send
        ``payload``, taking no lock (this very thread may hold one): the reader's next pass does both."""
        self._later.append(msg_id)
        self._outbox.append((None, None, payload))
        self.interrupt()

    def add_stream(self, msg_id: str, stream: _StreamState) -> None:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self.streams[msg_id] = stream

    def drop_stream(self, msg_id: str) -> None:
        with self._lock:
            self.streams.pop(msg_id, None)

    def next_in(self, stream: _StreamState, deadline: float | None, what: str) -> Any:
        """The next item of ``stream``, waiting until ``deadline``; its end raises (see _StreamState.take)."""
        while True:
            with self._lock:
                if stream.ready():
                    return stream.take()
                waiter = stream.waiter = Waiter()
            try:
                self._wait(waiter, deadline, what)
            finally:
                self._let_go(waiter)
                with self._lock:
                    if stream.waiter is waiter:
                        stream.waiter = None

    def forget(self, msg_id: str) -> None:
        """Stop waiting for ``msg_id`` (timed out): a late reply is then dropped."""
        with self._lock:
            self._pending.pop(msg_id, None)

    def request(self, msg_id: str, payload: Payload, timeout: float | None, what: str) -> protocol.Message:
        """Send ``payload`` and wait for the reply carrying ``msg_id``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = Waiter()
        try:
            lead = self._register(msg_id, waiter, True)  # one thread calling leads at once: it sends, then reads
            self._outbox.append((msg_id, waiter, payload))
            if lead:
                self._run_lead(waiter, deadline, what)
            else:
                self._flush()
                self._wait(waiter, deadline, what)
        finally:
            self._let_go(waiter)
            if not waiter.done:
                self.forget(msg_id)
        return waiter.outcome()

    def _timed_out(self, waiter: Waiter, what: str) -> CallTimeoutError:
        """The error of a call whose time is up: it says so when the request never left the outbox."""
        if any(entry[1] is waiter for entry in list(self._outbox)):
            return CallTimeoutError(f"{what}: could not send within the timeout (the worker is not reading)")
        return CallTimeoutError(f"{what} timed out")

    # -- the lead ---------------------------------------------------------------------------

    def _wait(self, waiter: Waiter, deadline: float | None, what: str) -> None:
        while True:
            with self._lock:
                if waiter.done:
                    return
                lead = self._leader is None
                if lead:
                    self._leader = waiter
                else:
                    wake = self._followers.add(waiter)
            if lead:
                self._run_lead(waiter, deadline, what)
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if wake.acquire(timeout=-1 if remaining is None else max(remaining, 0)):
                if waiter.done:  # set before the wake-up was released: no lock needed to see it
                    return
                continue  # promoted to lead
            with self._lock:
                if self._followers.leave(waiter):  # nobody woke us: time is up
                    if not waiter.done:
                        raise self._timed_out(waiter, what)
                    return
            wake.acquire()  # a wake-up raced the timeout: take it

    def _run_lead(self, waiter: Waiter, deadline: float | None, what: str) -> None:
        """With the lead taken: lead until our reply is in (else raise the timeout), then let go."""
        try:
            self._lead(waiter, deadline)
        finally:
            self._step_down()
        if not waiter.done:
            raise self._timed_out(waiter, what)

    def _lead(self, waiter: Waiter, deadline: float | None) -> None:
        """Send what waits in the outbox, then poll the end and hand out replies until ours is in or time is up."""
        if self._outbox:
            self._flush()
        poll = self._poller.poll
        wake_fd = self._wake_fd
        while not waiter.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if self._stalled:  # the high-water mark refused the outbox: try again soon
                remaining = SEND_RETRY if remaining is None else min(remaining, SEND_RETRY)
            for fd, _ in self._spinner.poll(poll, None if remaining is None else _ms(remaining)):
                if fd == wake_fd:
                    self._clear_wake()
            self._read_pass()

    def _read_pass(self) -> None:
        """One pass of the reader (who holds the lead): send the outbox, take every reply, hand out output."""
        with self._io:
            if self._failure is not None:  # the channel is finished; its end may be closed
                return
            if self._outbox:
                self._send_outbox()
            payloads = self.end.recv_all()
        if self._outbox:  # queued while this thread held the end
            self._flush()
        if not payloads and self.end.drops == self._drops and not self._later:
            return
        parsed = list(map(self._parse, payloads))  # decoded outside the lock
        outputs: list = []
        with self._lock:
            while self._later:  # issue 15: streams whose finalizers ran
                self.streams.pop(self._later.popleft(), None)
            self._route(payloads, parsed, outputs)
            self._check_drops(outputs)
        if outputs:
            self._hand_out(outputs)

    def _take_lead(self) -> bool:
        with self._lock:
            if self._leader is not None:
                return False
            self._leader = _DRAIN
            return True

    def _let_go(self, waiter: Waiter) -> None:
        """A caller is done, or an exception (a Ctrl-C) cut it short: it must not keep the lead,
        nor a follower's place that the lead could be handed to."""
        if self._leader is waiter:  # cut short before leading; only this thread can clear it: no lock to look
            self._step_down()
            return
        if waiter.wake is None:  # it never slept as a follower
            return
        # Done: it wakes the next in the relay of replies; else it leaves the followers. If nobody leads, the
        # relay's last caller, or one maybe handed the lead as it left, wakes a follower to lead (at worst in vain).
        with self._lock:
            followers = self._followers
            ended = followers.pass_on(waiter) if waiter.done else not followers.leave(waiter)
            if ended and self._leader is None:
                followers.wake_next()

    def _step_down(self) -> None:
        """Let go of the lead: wake a follower to take it, unless a relay of replies runs (a caller of it
        that calls again takes the lead without a wake-up; its last caller wakes one if none did)."""
        with self._lock:
            self._leader = None
            if self._closed:
                self._close_wake_locked()
            elif not self._followers.relaying:
                self._followers.wake_next()

    def _resolve(self, waiter: Waiter, message: protocol.Message) -> None:
        waiter.message = message
        self._finish_locked(waiter)

    def _fail(self, waiter: Waiter, error: BaseException) -> None:
        waiter.error = error
        self._finish_locked(waiter)

    def _finish_locked(self, waiter: Waiter) -> None:
        waiter.done = True
        self._followers.wake(waiter)

    # -- while no caller leads ----------------------------------------------------------------

    def poll_idle(self, timeout: float, fds: list[int]) -> set[int]:
        """For a supervisor thread: wait on ``fds`` and, while no caller leads, on the end.

        Output and heartbeat echoes that arrive while nobody calls are handed out here (the
        supervisor takes the lead for that pass). Returns which of ``fds`` are readable.
        """
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        watch = (self.end.fileno(), self._wake_fd)
        watch_end = self._leader is None and self._wake is not None
        if watch_end:
            for fd in watch:
                poller.register(fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(_ms(timeout))}
        if watch_end and ready & set(watch):
            self.drain()
        return ready & set(fds)

    def drain(self) -> None:
        """Hand out every message waiting on the end now: read it here when no caller leads
        (a leader, if there is one, is woken by the same descriptors and reads it)."""
        if not self._take_lead():
            return
        try:
            self._clear_wake()
            self._read_pass()
        finally:
            self._step_down()

    def fail_all(self, error: MultifrostError, *, final: bool = False) -> None:
        """Fail every call in flight with ``error`` (crash, close); ``final`` fails later calls too."""
        with self._lock:
            self._fail_pending(error, final)
            self._followers.wake_queued()
        self.interrupt()

    def interrupt(self) -> None:
        """Wake the leader (and an idle supervisor) so that they look at the end again."""
        wake = self._wake
        if wake is not None:
            try:
                wake.ring()
            except OSError:  # closed meanwhile
                pass

    def _clear_wake(self) -> None:
        wake = self._wake
        if wake is not None:
            try:
                wake.clear()
            except OSError:
                pass

    def close(self) -> None:
        """Release the channel; later calls fail with why it ended (a crash, say), else TransportClosed.

        A leader may still be on its way into poll() on the wake-up: closing it under it would
        let the descriptor number be reused and the wake-up lost, so the leader closes it
        itself when it steps down.
        """
        self.fail_all(self._failure or TransportClosed("the worker was closed"), final=True)
        with self._io:  # a send under way ends before the end is closed; none starts after
            self._outbox.clear()
        with self._lock:
            self._closed = True
            self.end.set_reader(None)
            if self._leader is not None:
                return
            self._close_wake_locked()

    def _close_wake_locked(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.close()


def _ms(seconds: float) -> int:
    """select.poll takes whole milliseconds; round up so that a short wait is not a busy loop."""
    return max(0, int(seconds * 1000 + 0.999))
