"""The transport interface: a parent end (DEALER semantics) and a child end (ROUTER semantics).

Both ends are readiness-based and never block: ``send_nowait`` / ``recv_nowait`` do the
work, and ``fileno()`` is a file descriptor that turns readable when the end's state may
have changed (a payload arrived, room to send appeared, or the end closed).

Readiness, owned by the end. Some backends' descriptors are edge-triggered (ZeroMQ's
``FD``) or buffer frames in the process (unix), so a send may leave a message waiting that
``fileno()`` will not announce. The end knows when that happens, and says so once to the
one reader of the end, registered with ``set_reader(callback)``: the callback runs in the
sending thread right after such a send (it should only wake the reader, never read), or,
for a reader on an event loop that also gave ``soon``, once for a run of sends in the same
turn of the loop, before the loop next waits. A reader therefore needs only two rules,
both kept inside this module's methods: wake on ``fileno()`` or on its callback, then take
everything with ``recv_all()`` (which reads until the end reports nothing left and so
re-arms the descriptor). A reader that took a message and has not yet seen None will look
again anyway, so a send meanwhile need not tell it. Nobody else reads: a
sender never drains. The RPC core builds its sync (poll on ``fileno``) and async
(``loop.add_reader``) call paths on these primitives, so it never knows which backend
carries its bytes; the awaitable and blocking helpers below are for simpler users and tests
(they try before waiting, so they need no callback). A user of an end uses either the
helpers or its own reader on ``fileno()``, not both, and at most one helper waits on an end
at a time.

Waiting to send. A send refused at the high-water mark is retried after a wake-up. Because a
``recv_nowait`` can consume the very event that says "room appeared", a user that both
receives and has a refused send pending checks ``writable`` after draining (it is the state
seen by the last ``recv_nowait`` that returned ``None``; reading it does no I/O): when True,
retry the send instead of waiting.

Closing. ``close()`` is idempotent and wakes helpers waiting on the end (in any thread or
event loop): they raise TransportClosed at once. ``close()`` releases ``fileno()``; a user
with its own reader removes it (``loop.remove_reader``) before closing, and a thread blocked
in its own ``select`` on ``fileno()`` is not woken by a close from another thread. After
close, ``send_nowait``/``recv_nowait``/``fileno`` raise TransportClosed.
"""
from __future__ import annotations

import os
import select
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, TypeVar

from ..errors import TransportClosed, TransportError

if TYPE_CHECKING:
    import asyncio

    from ..codec import Payload

R = TypeVar("R")  # what one readiness attempt yields (a payload, a (peer, payload), True for a send)


class Wakeup:
    """A readable-when-rung descriptor: an eventfd on Linux, a non-blocking pipe elsewhere.

    ``ring`` makes ``fd`` readable until ``clear``; ringing twice before a clear is harmless.
    """

    __slots__ = ("fd", "_wfd")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.fd = self._wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            self.fd, self._wfd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._wfd, False)

    if hasattr(os, "eventfd"):

        def ring(self) -> None:
            os.eventfd_write(self._wfd, 1)

        def clear(self) -> None:
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass

    else:

        def ring(self) -> None:
            try:
                os.write(self._wfd, b"\0")
            except BlockingIOError:  # the pipe is full: it is readable anyway
                pass

        def clear(self) -> None:
            try:
                while os.read(self.fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        os.close(self.fd)
        if self._wfd != self.fd:
            os.close(self._wfd)


class _End(ABC):
    """What both ends share: the endpoint, readiness, close, and the waiting helpers."""

    #: The endpoint as resolved after bind (``tcp://127.0.0.1:0`` reports its real port).
    endpoint: str

    #: How many connections of this end were dropped so far (the peer went away, or the
    #: connection was cut for a frame over ``max_message_size`` or another protocol error),
    #: as seen by ``recv_nowait``; a connecting end dials again by itself.
    drops: int = 0

    #: Whether a waiter on ``fileno()`` should spin a moment before sleeping (``spin.py``): true
    #: for an end without I/O threads of its own, whose peer's answer comes straight to the waiter;
    #: ZeroMQ's I/O threads need the CPU that spinning would take.
    spins: bool = False

    #: Whether sends made back to back cost less than the same sends spread out: true for ZeroMQ,
    #: where one wake-up of the I/O thread carries the lot, so a worker sends the replies of one
    #: pass of its reader together as the pass ends (``child_io``). A unix end batches a drain's
    #: replies into one system call by itself (``unix_cork``); holding them longer only delays them.
    coalesces: bool = False

    #: Whether ``send_nowait`` takes a payload packed as ``codec.Pieces`` (``pack_message(...,
    #: gather=True)``) and writes its parts with scatter-gather I/O: true for unix ends, so a large
    #: bytes value goes from the caller's object to the kernel without a copy. Others join its parts.
    gathers: bool = False

    def __init__(self) -> None:
        self._waiters_lock = threading.Lock()
        self._closing = False
        self._close_wakeup: Wakeup | None = None  # rung by close() for blocking helpers
        self._blocking_waiters = 0
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._reader: Callable[[], object] | None = None
        self._soon: Callable[[Callable[[], None]], object] | None = None

    def set_reader(self, callback: Callable[[], object] | None,
                   soon: Callable[[Callable[[], None]], object] | None = None) -> None:
        """Name the one reader of this end: ``callback`` runs in the sending thread after a send
        that left a message ``fileno()`` will not announce (None: no reader to wake).

        ``soon(fn)`` (an event loop's ``call_soon``): runs ``fn`` in the reader's thread before it
        next waits. An end may then put off what each send would do (look for a hidden message,
        write) and do it once for a run of sends made in the same turn of the loop."""
        self._reader = callback
        self._soon = soon

    def _hidden(self) -> None:
        """Backends call this when a send (or a look for room) may hide a waiting message."""
        reader = self._reader
        if reader is not None:
            reader()

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor that turns readable when this end may have news (see the module doc)."""

    @abstractmethod
    def close(self, linger: float = 0.0) -> None:
        """Close the end; idempotent. Waiters in the helpers wake and raise TransportClosed.

        ``linger``: seconds that messages still queued may take to leave (0: drop them);
        they leave in the background, and ``transports.shutdown()`` waits for them.
        """

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once close() was called."""

    @property
    @abstractmethod
    def writable(self) -> bool:
        """Whether a send would have room, as seen by the last ``recv_nowait`` that returned None."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _wake_waiters(self) -> None:
        """Wake every helper waiting on this end; backends call it in close() before releasing fds."""
        with self._waiters_lock:
            self._closing = True
            if self._close_wakeup is not None:
                self._close_wakeup.ring()  # never cleared: stays readable for late pollers
                if self._blocking_waiters == 0:
                    self._close_wakeup.close()
                    self._close_wakeup = None
            async_waiters = list(self._async_waiters)
        for loop, event in async_waiters:
            if _running_loop() is loop:
                event.set()
            else:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # that loop is closed: nobody waits there any more
                    pass

    # -- helpers built on the primitives -------------------------------------------------

    def _check_open(self) -> None:
        if self.closed or self._closing:
            raise TransportClosed(f"transport end {self.endpoint} is closed")

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"transport end {self.endpoint}: timed out")

    async def _await_ready(self, attempt: Callable[[], R | None], timeout: float | None) -> R:
        """Run ``attempt`` until it returns a value, waiting on fileno() in the running loop."""
        import asyncio  # here only: a worker served without asyncio never loads it

        self._check_open()
        result = attempt()
        if result is not None:
            return result
        loop = asyncio.get_running_loop()
        woke = asyncio.Event()
        waiter = (loop, woke)
        with self._waiters_lock:
            self._check_open()
            fd = self.fileno()
            self._async_waiters.add(waiter)
        loop.add_reader(fd, woke.set)
        try:
            deadline = None if timeout is None else loop.time() + timeout
            async with asyncio.timeout_at(deadline):
                while True:
                    woke.clear()
                    self._check_open()
                    result = attempt()
                    if result is not None:
                        return result
                    await woke.wait()
        except TimeoutError:
            self._check_open()
            raise self._timed_out() from None
        finally:
            with self._waiters_lock:
                self._async_waiters.discard(waiter)
            loop.remove_reader(fd)

    def _block_ready(self, attempt: Callable[[], R | None], timeout: float | None) -> R:
        """Run ``attempt`` until it returns a value, blocking on fileno() in this thread."""
        self._check_open()
        result = attempt()
        if result is not None:
            return result
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._waiters_lock:
            self._check_open()
            fd = self.fileno()
            if self._close_wakeup is None:
                self._close_wakeup = Wakeup()
            self._blocking_waiters += 1
            close_fd = self._close_wakeup.fd
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(close_fd, select.POLLIN)
            while True:
                if deadline is None:
                    poller.poll()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._timed_out()
                    poller.poll(remaining * 1000.0 + 1.0)
                self._check_open()
                result = attempt()
                if result is not None:
                    return result
        finally:
            with self._waiters_lock:
                self._blocking_waiters -= 1
                if self._closing and self._blocking_waiters == 0 and self._close_wakeup is not None:
                    self._close_wakeup.close()
                    self._close_wakeup = None


def _until_none(recv: Callable[[], R | None]) -> list[R]:
    """What ``recv`` returns until it returns None, in order."""
    items: list[R] = []
    while True:
        item = recv()
        if item is None:
            return items
        items.append(item)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    import asyncio  # an end with async waiters only: asyncio is loaded

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ParentEnd(_End):
    """DEALER semantics: one peer; send one payload, receive one payload, in order."""

    @abstractmethod
    def send_nowait(self, payload: Payload) -> bool:
        """Queue one payload; False when the high-water mark is reached (nothing queued).

        ``Pieces`` are written part by part by an end that ``gathers``, joined by the others."""

    @abstractmethod
    def recv_nowait(self) -> bytes | None:
        """The next payload, or None when none is ready. Malformed frames are dropped and logged."""

    def recv_all(self) -> list[bytes]:
        """Every payload ready now, in order; reading until None re-arms ``fileno()``."""
        return _until_none(self.recv_nowait)

    def check(self) -> None:
        """Raise AuthenticationError when the peer refused this end's security handshake."""

    async def send(self, payload: Payload, timeout: float | None = None) -> None:
        """Send, waiting (without blocking the loop) while the high-water mark is reached."""
        await self._await_ready(lambda: True if self.send_nowait(payload) else None, timeout)

    async def recv(self, timeout: float | None = None) -> bytes:
        """Wait for the next payload."""
        return await self._await_ready(self.recv_nowait, timeout)

    def send_blocking(self, payload: Payload, timeout: float | None = None) -> None:
        """Send from a plain thread, waiting while the high-water mark is reached."""
        self._block_ready(lambda: True if self.send_nowait(payload) else None, timeout)

    def recv_blocking(self, timeout: float | None = None) -> bytes:
        """Receive from a plain thread."""
        return self._block_ready(self.recv_nowait, timeout)


class ChildEnd(_End):
    """ROUTER semantics: many peers, each known by the identity its messages came with."""

    @abstractmethod
    def send_nowait(self, peer: bytes, payload: Payload) -> bool:
        """Queue one payload to ``peer``; False at the high-water mark.

        A peer this end does not know (never heard from, or gone) raises TransportError.
        """

    @abstractmethod
    def recv_nowait(self) -> "tuple[bytes, bytes] | None":
        """The next ``(peer, payload)``, or None. Malformed frames are dropped and logged."""

    def recv_all(self) -> "list[tuple[bytes, bytes]]":
        """Every ``(peer, payload)`` ready now, in order; reading until None re-arms ``fileno()``."""
        return _until_none(self.recv_nowait)

    @property
    @abstractmethod
    def peers(self) -> "frozenset[bytes]":
        """Identities of the peers this end has received from."""

    def send_all(self, payload: Payload) -> int:
        """Send ``payload`` to every known peer, best effort; returns how many took it."""
        sent = 0
        for peer in self.peers:
            try:
                sent += bool(self.send_nowait(peer, payload))
            except TransportError:
                continue
        return sent

    async def send(self, peer: bytes, payload: Payload, timeout: float | None = None) -> None:
        """Send to ``peer``, waiting (without blocking the loop) while the high-water mark is reached."""
        await self._await_ready(lambda: True if self.send_nowait(peer, payload) else None, timeout)

    async def recv(self, timeout: float | None = None) -> "tuple[bytes, bytes]":
        """Wait for the next ``(peer, payload)``."""
        return await self._await_ready(self.recv_nowait, timeout)

    def send_blocking(self, peer: bytes, payload: Payload, timeout: float | None = None) -> None:
        """Send to ``peer`` from a plain thread, waiting while the high-water mark is reached."""
        self._block_ready(lambda: True if self.send_nowait(peer, payload) else None, timeout)

    def recv_blocking(self, timeout: float | None = None) -> "tuple[bytes, bytes]":
        """Receive ``(peer, payload)`` from a plain thread."""
        return self._block_ready(self.recv_nowait, timeout)
