"""Request/response correlation over a ParentEnd: the parent's call path.

Two flavours share one dispatch: ``SyncChannel`` for plain threads, where the calling
thread does the socket I/O itself under a lock and the thread that holds the lead hands
other threads' replies to them (leader/follower: no thread hop when uncontended), and
``AsyncChannel`` for asyncio, which drains the socket from ``loop.add_reader`` and sends
straight from the calling task. See shared PERFORMANCE.md for why these two designs.
"""
from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from . import extensions, protocol
from . import wire
from .codec import Limits
from .errors import CallTimeoutError, MultifrostError, ProtocolError, TransportClosed
from .transports import ParentEnd
from .wire import DEBUG, wire_debug

if TYPE_CHECKING:
    from .streams import _StreamState

log = logging.getLogger(__name__)

OutputHandler = Callable[[protocol.Message], None]

#: Handed out like output when the end reports a dropped connection (see ``_Channel.on_drop``).
_DROPPED = object()

#: How often a caller blocked by the high-water mark looks at the socket again (seconds).
_SEND_RETRY = 0.01


class _Channel:
    """What both flavours share: the pending table and turning payloads into outcomes."""

    def __init__(self, end: ParentEnd, on_output: OutputHandler, limits: Limits | None) -> None:
        self.end = end
        self._on_output = on_output
        self._limits = limits
        self._pending: dict = {}
        self._failure: MultifrostError | None = None
        self._drops = end.drops
        #: Called (outside the channel's lock) when the end's connection was dropped.
        self.on_drop: Callable[[], object] | None = None
        # issue 15: what the worker agreed to (from its heartbeat echo), and the streams in flight.
        self.extensions = extensions.NONE
        self.streams: dict = {}  # call id -> streams._StreamState
        #: Where the wire records of this channel go: ``multifrost.wire``, bound to the worker's context.
        self.wire: logging.Logger | logging.LoggerAdapter = wire.log

    def _put(self, payload: bytes) -> bool:
        """Offer one payload to the end (False: refused, nothing queued); a wire record when it went."""
        sent = self.end.send_nowait(payload)
        if sent and wire_debug(DEBUG):
            wire.note(self.wire, "sent", payload, self.end.endpoint)
        return sent

    def _check_drops(self, outputs: list) -> None:
        """After a drain: note a connection the end saw dropped, for ``on_drop``."""
        if self.end.drops != self._drops:
            self._drops = self.end.drops
            outputs.append(_DROPPED)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _decode(self, payload: bytes) -> protocol.Message | None:
        try:
            message = protocol.decode(payload, self._limits)
            if wire_debug(DEBUG):
                wire.note(self.wire, "received", payload, self.end.endpoint, message.raw)
            return message
        except ProtocolError as exc:
            log.warning("dropped a message from the worker: %s", exc)
            self._fail_dropped(payload, exc)
            return None

    def _fail_dropped(self, payload: bytes, exc: ProtocolError) -> None:
        """A reply was dropped: if it names a call that waits, that call fails now, not at its timeout."""
        msg_id, kind = protocol.peek(payload)
        if self.streams and msg_id is not None and msg_id in self.streams:  # issue 15: a stream that lost a message fails
            self._end_stream(msg_id, ProtocolError(f"a message of the stream was dropped: {exc}"))
        elif kind in (protocol.RESPONSE, protocol.ERROR, protocol.HEARTBEAT):
            waiter = self._pending.pop(msg_id, None)
            if waiter is not None:
                self._fail(waiter, ProtocolError(f"the worker's reply was dropped: {exc}"))

    def _deliver(self, message: protocol.Message, outputs: list) -> None:
        """Route one inbound message: a reply to its waiter, output to the handler."""
        kind = message.type
        if self.streams and message.id in self.streams:  # issue 15 hook: items and end of a stream
            stream = self.streams[message.id] if kind == protocol.STREAM_ITEM else self.streams.pop(message.id)
            waiter = stream.deliver(message)
            if waiter is not None:
                self._resolve(waiter, message)
        elif kind in (protocol.RESPONSE, protocol.ERROR, protocol.HEARTBEAT):
            waiter = self._pending.pop(message.id, None)
            if waiter is None:
                log.debug("dropped a %s for unknown request %s (late or timed out)", kind, message.id)
            else:
                self._resolve(waiter, message)
        elif kind in (protocol.STDOUT, protocol.STDERR):
            outputs.append(message)
        else:
            log.debug("ignored a %s message from the worker", kind)

    def _hand_out(self, outputs: list) -> None:
        for message in outputs:
            try:
                if message is _DROPPED:
                    if self.on_drop is not None:
                        self.on_drop()
                else:
                    self._on_output(message)
            except Exception:
                log.exception("the output handler raised")

    def _end_stream(self, msg_id: str, error: MultifrostError) -> None:
        """issue 15: fail one stream (a lost message, the worker gone)."""
        waiter = self.streams.pop(msg_id).fail(error)
        if waiter is not None:
            self._fail(waiter, error)

    def _resolve(self, waiter, message: protocol.Message) -> None:
        raise NotImplementedError

    def _fail(self, waiter, error: MultifrostError) -> None:
        raise NotImplementedError


class _Waiter:
    """A sync caller's slot: the outcome, and a lock that is released to wake it."""

    __slots__ = ("message", "error", "done", "sleeping", "wake")

    def __init__(self) -> None:
        self.message: protocol.Message | None = None
        self.error: BaseException | None = None
        self.done = False
        self.sleeping = False
        self.wake = threading.Lock()
        self.wake.acquire()

    def outcome(self) -> protocol.Message:
        if self.error is not None:
            raise self.error
        return self.message  # type: ignore[return-value]  # done without an error: the reply is there


class SignallingWaiter(_Waiter):
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
        return _Waiter.done.__get__(self)  # type: ignore[misc,attr-defined]  # the slot's descriptor

    @done.setter
    def done(self, value: bool) -> None:
        _Waiter.done.__set__(self, value)  # type: ignore[misc,attr-defined]
        if value:
            self.arrived = time.time()
            try:
                os.write(self.fd, b"x")
            except OSError:
                pass


class SyncChannel(_Channel):
    """Blocking calls from any number of threads; the first waiting thread leads the I/O."""

    def __init__(self, end: ParentEnd, on_output: OutputHandler, limits: Limits | None = None) -> None:
        super().__init__(end, on_output, limits)
        self._lock = threading.Lock()
        self._leading = False
        self._closed = False
        self._followers: list[_Waiter] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = select.poll()
        self._poller.register(end.fileno(), select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)
        self._later: deque = deque()  # issue 15: (stream id, payload) left by finalizers, see post_soon

    def submit(self, msg_id: str, payload: bytes, waiter_factory: Callable[[], _Waiter] = _Waiter,
               ) -> tuple[_Waiter, bool]:
        """Register a request and try to send it; returns its waiter and whether it went out."""
        waiter = waiter_factory()
        outputs: list = []
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._pending[msg_id] = waiter
            sent = self._put(payload)
            self._drain_aside_locked(outputs)
        self._hand_out(outputs)
        return waiter, sent

    # -- issue 15 hooks: control messages and streams -----------------------------------------

    def post(self, payload: bytes) -> bool:
        """Send a message that expects no reply (CANCEL, CREDIT, a stream's CALL); False when refused."""
        outputs: list = []
        with self._lock:
            if self._failure is not None:
                raise self._failure
            sent = self._put(payload)
            self._drain_aside_locked(outputs)
        self._hand_out(outputs)
        return sent

    def post_soon(self, msg_id: str, payload: bytes) -> None:
        """From a finalizer (a stream garbage-collected): forget stream ``msg_id`` and send
        ``payload`` without waiting for the lock, which this very thread may hold; when it is
        taken, the next drain does both."""
        if not self._lock.acquire(blocking=False):
            self._later.append((msg_id, payload))
            self.interrupt()
            return
        try:
            self._later.append((msg_id, payload))
            self._post_later_locked()
        finally:
            self._lock.release()

    def _post_later_locked(self) -> None:
        while self._later:
            msg_id, payload = self._later.popleft()
            self.streams.pop(msg_id, None)
            if self._failure is None:
                self._put(payload)

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
                waiter = stream.waiter = _Waiter()
            try:
                self._wait(waiter, deadline, what)
            finally:
                with self._lock:
                    if stream.waiter is waiter:
                        stream.waiter = None

    def forget(self, msg_id: str) -> None:
        """Stop waiting for ``msg_id`` (timed out): a late reply is then dropped."""
        with self._lock:
            self._pending.pop(msg_id, None)

    def request(self, msg_id: str, payload: bytes, timeout: float | None, what: str) -> protocol.Message:
        """Send ``payload`` and wait for the reply carrying ``msg_id``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter, sent = self.submit(msg_id, payload)
        try:
            if not sent:
                self._send_when_ready(waiter, payload, deadline, what)
            self._wait(waiter, deadline, what)
        finally:
            if not waiter.done:
                self.forget(msg_id)
        return waiter.outcome()

    def _send_when_ready(self, waiter: _Waiter, payload: bytes, deadline: float | None, what: str) -> None:
        """The high-water mark (or no peer yet) refused the send: retry every ``_SEND_RETRY`` s
        until it goes, the call ends, or time is up (no descriptors: the end may close meanwhile)."""
        while True:
            outputs: list = []
            with self._lock:
                if waiter.done:
                    return
                sent = self._put(payload)
                self._drain_aside_locked(outputs)
            self._hand_out(outputs)
            if sent:
                return
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise CallTimeoutError(f"{what}: could not send within the timeout (the worker is not reading)")
            time.sleep(_SEND_RETRY if remaining is None else min(_SEND_RETRY, remaining))

    def _wait(self, waiter: _Waiter, deadline: float | None, what: str) -> None:
        while True:
            with self._lock:
                if waiter.done:
                    return
                lead = not self._leading
                if lead:
                    self._leading = True
                else:
                    waiter.sleeping = True
                    self._followers.append(waiter)
            if lead:
                try:
                    self._lead(waiter, deadline)
                finally:
                    with self._lock:
                        self._leading = False
                        if self._closed:
                            self._close_wake_locked()
                        else:
                            self._promote_locked()
                if not waiter.done:
                    raise CallTimeoutError(f"{what} timed out")
                return
            remaining = _remaining(deadline)
            if waiter.wake.acquire(timeout=-1 if remaining is None else max(remaining, 0)):
                continue  # done, or promoted to lead
            with self._lock:
                if waiter.sleeping:  # nobody woke us: time is up
                    waiter.sleeping = False
                    self._followers.remove(waiter)
                    if not waiter.done:
                        raise CallTimeoutError(f"{what} timed out")
                    return
            waiter.wake.acquire()  # a wake-up raced the timeout: take it

    def _lead(self, waiter: _Waiter, deadline: float | None) -> None:
        """Poll the socket and hand out replies until ours is in or time is up."""
        poll = self._poller.poll
        while not waiter.done:
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                return
            events = poll(None if remaining is None else _ms(remaining))
            if any(fd == self._wake_r for fd, _ in events):
                _read_all(self._wake_r)
            outputs: list = []
            with self._lock:
                self._drain_locked(outputs)
            self._hand_out(outputs)

    def _promote_locked(self) -> None:
        """Wake one sleeping follower so that it takes the lead."""
        while self._followers:
            follower = self._followers.pop()
            if follower.sleeping:
                follower.sleeping = False
                follower.wake.release()
                return

    def _drain_locked(self, outputs: list) -> bool:
        """Read and route every message waiting; True when there was any."""
        if self._failure is not None:
            return False  # the channel is finished; its end may be closed already
        if self._later:  # issue 15: what finalizers left to send
            self._post_later_locked()
        recv = self.end.recv_nowait
        got = False
        while True:
            payload = recv()
            if payload is None:
                self._check_drops(outputs)
                return got
            got = True
            message = self._decode(payload)
            if message is not None:
                self._deliver(message, outputs)

    def _drain_aside_locked(self, outputs: list) -> None:
        """Drain from a thread that is not the leader. The leader sleeps in poll(), not on its
        waiter's lock, and this read may have taken its reply (and the socket's edge-triggered
        wake-up with it): wake it so that it looks."""
        if self._drain_locked(outputs) and self._leading:
            self.interrupt()

    def _resolve(self, waiter: _Waiter, message: protocol.Message) -> None:
        waiter.message = message
        self._finish_locked(waiter)

    def _fail(self, waiter: _Waiter, error: MultifrostError) -> None:
        waiter.error = error
        self._finish_locked(waiter)

    def _finish_locked(self, waiter: _Waiter) -> None:
        waiter.done = True
        if waiter.sleeping:
            waiter.sleeping = False
            self._followers.remove(waiter)
            waiter.wake.release()

    def poll_idle(self, timeout: float, fds: list[int]) -> set[int]:
        """For a supervisor thread: wait on ``fds`` and, while no caller leads, on the socket.

        Output and heartbeat echoes that arrive while nobody calls are handed out here.
        Returns which of ``fds`` are readable.
        """
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        end_fd = self.end.fileno()
        watch_end = not self._leading
        if watch_end:
            poller.register(end_fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(_ms(timeout))}
        if watch_end and end_fd in ready:
            self.drain()
        return ready & set(fds)

    def drain(self) -> None:
        """Hand out every message waiting on the socket now, whether or not a caller leads."""
        outputs: list = []
        with self._lock:
            self._drain_aside_locked(outputs)
        self._hand_out(outputs)

    def fail_all(self, error: MultifrostError, *, final: bool = False) -> None:
        """Fail every call in flight with ``error`` (crash, close); ``final`` fails later calls too."""
        with self._lock:
            if final:
                self._failure = error
            pending, self._pending = self._pending, {}
            for waiter in pending.values():
                self._fail(waiter, error)
            for msg_id in list(self.streams):
                self._end_stream(msg_id, error)
        self.interrupt()

    def interrupt(self) -> None:
        """Wake the leader (and an idle supervisor) so that they look at the state again."""
        if self._wake_w < 0:
            return  # closed
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        """Release the channel; later calls fail with why it ended (a crash, say), else TransportClosed.

        A leader may still be on its way into poll() on the wake-up pipe: closing the pipe
        under it would let the descriptor number be reused and the wake-up lost, so the
        leader closes the pipe itself when it steps down.
        """
        self.fail_all(self._failure or TransportClosed("the worker was closed"), final=True)
        with self._lock:
            self._closed = True
            if self._leading:
                return
            self._close_wake_locked()

    def _close_wake_locked(self) -> None:
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


class AsyncChannel(_Channel):
    """Awaitable calls on one event loop; replies are drained from ``loop.add_reader``."""

    def __init__(self, end: ParentEnd, on_output: OutputHandler, limits: Limits | None = None) -> None:
        super().__init__(end, on_output, limits)
        self._loop = asyncio.get_running_loop()
        self._fd = end.fileno()
        self._ready = asyncio.Event()
        self._loop.add_reader(self._fd, self.drain)

    async def request(self, msg_id: str, payload: bytes, timeout: float | None, what: str) -> protocol.Message:
        """Send ``payload`` and wait for the reply carrying ``msg_id``."""
        if self._failure is not None:
            raise self._failure
        future = self._loop.create_future()
        self._pending[msg_id] = future
        timer = None
        try:
            if timeout is not None:
                timer = self._loop.call_later(timeout, _expire, future, what)
            if not self._put(payload):
                await self._send_when_ready(future, payload)
            self.drain()
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(msg_id, None)

    # -- issue 15 hooks: control messages and streams -----------------------------------------

    def post(self, payload: bytes) -> bool:
        """Send a message that expects no reply (CANCEL, CREDIT, a stream's CALL); False when refused."""
        if self._failure is not None:
            raise self._failure
        return self._put(payload)

    def add_stream(self, msg_id: str, stream: _StreamState) -> None:
        if self._failure is not None:
            raise self._failure
        self.streams[msg_id] = stream

    def drop_stream(self, msg_id: str) -> None:
        self.streams.pop(msg_id, None)

    async def next_in(self, stream: _StreamState, timeout: float | None, what: str) -> Any:
        """The next item of ``stream``, waiting up to ``timeout``; its end raises (see _StreamState.take)."""
        if not stream.ready():
            future = stream.waiter = self._loop.create_future()
            timer = None if timeout is None else self._loop.call_later(timeout, _expire, future, what)
            try:
                self.drain()
                await future
            finally:
                if timer is not None:
                    timer.cancel()
                if stream.waiter is future:
                    stream.waiter = None
        return stream.take()

    async def _send_when_ready(self, future: asyncio.Future, payload: bytes) -> None:
        """Refused at the high-water mark (or no peer yet): retry on each wake-up of the socket."""
        while not future.done():
            self.drain()  # sets _ready itself: clear it after, or this loop never sleeps
            self._ready.clear()
            if self._put(payload):
                return
            waiter = self._loop.create_task(self._ready.wait())
            try:
                await asyncio.wait([waiter, future], timeout=_SEND_RETRY, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        future.result()  # raises the timeout or failure that ended the wait

    def drain(self) -> None:
        """Read every ready message and hand it out (the reader callback)."""
        self._ready.set()
        outputs: list = []
        recv = self.end.recv_nowait
        while True:
            payload = recv()
            if payload is None:
                break
            message = self._decode(payload)
            if message is not None:
                self._deliver(message, outputs)
        self._check_drops(outputs)
        self._hand_out(outputs)

    def _resolve(self, future: asyncio.Future, message: protocol.Message) -> None:
        if not future.done():
            future.set_result(message)

    def _fail(self, future: asyncio.Future, error: MultifrostError) -> None:
        if not future.done():
            future.set_exception(error)

    def fail_all(self, error: MultifrostError, *, final: bool = False) -> None:
        if final:
            self._failure = error
        pending, self._pending = self._pending, {}
        for future in pending.values():
            self._fail(future, error)
        for msg_id in list(self.streams):
            self._end_stream(msg_id, error)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        self.fail_all(self._failure or TransportClosed("the worker was closed"), final=True)


def _expire(future: asyncio.Future, what: str) -> None:
    if not future.done():
        future.set_exception(CallTimeoutError(f"{what} timed out"))


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _ms(seconds: float) -> int:
    """select.poll takes whole milliseconds; round up so that a short wait is not a busy loop."""
    return max(0, int(seconds * 1000 + 0.999))


def _read_all(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
