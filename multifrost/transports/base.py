"""The transport interface: a parent end (DEALER semantics) and a child end (ROUTER semantics).

Both ends are readiness-based and never block: ``send_nowait`` / ``recv_nowait`` do the
work, and ``fileno()`` is a file descriptor that turns readable when the end's state may
have changed (a payload arrived, room to send appeared, or the end closed). The descriptor
is edge-triggered in the way ZeroMQ's ``FD`` is: after waking on it, and after every
``send_nowait``, drain with ``recv_nowait`` until it returns ``None`` before waiting on the
descriptor again. The RPC core builds its sync (select on ``fileno``) and async
(``loop.add_reader``) call paths on these primitives, so it never knows which backend
carries its bytes; the awaitable and blocking helpers below are for simpler users and tests.
A user of an end uses either the helpers or its own reader on ``fileno()``, not both.
"""
from __future__ import annotations

import asyncio
import selectors
import time
from abc import ABC, abstractmethod
from typing import Callable, Generic, TypeVar

from ..errors import TransportClosed, TransportError

T = TypeVar("T")


class _End(ABC, Generic[T]):
    """What both ends share: the endpoint, readiness, close, and the waiting helpers."""

    #: The endpoint as resolved after bind (``tcp://127.0.0.1:0`` reports its real port).
    endpoint: str

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor that turns readable when this end may have news (see the module doc)."""

    @abstractmethod
    def close(self) -> None:
        """Close the end; idempotent. Waiters in the helpers wake and raise TransportClosed."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once close() was called."""

    @abstractmethod
    def _recv_item(self) -> T | None:
        """The backend's recv_nowait."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- helpers built on the primitives -------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise TransportClosed(f"transport end {self.endpoint} is closed")

    async def _await_ready(self, attempt: Callable[[], T | None], timeout: float | None) -> T:
        """Run ``attempt`` until it returns a value, waiting on fileno() in the running loop."""
        self._check_open()
        result = attempt()
        if result is not None:
            return result
        loop = asyncio.get_running_loop()
        woke = asyncio.Event()
        fd = self.fileno()
        loop.add_reader(fd, woke.set)
        try:
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                self._check_open()
                result = attempt()
                if result is not None:
                    return result
                woke.clear()
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"transport end {self.endpoint}: timed out")
                try:
                    await asyncio.wait_for(woke.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            loop.remove_reader(fd)

    def _block_ready(self, attempt: Callable[[], T | None], timeout: float | None) -> T:
        """Run ``attempt`` until it returns a value, blocking on fileno() in this thread."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.fileno(), selectors.EVENT_READ)
            while True:
                self._check_open()
                result = attempt()
                if result is not None:
                    return result
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"transport end {self.endpoint}: timed out")
                selector.select(remaining)


class ParentEnd(_End[bytes]):
    """DEALER semantics: one peer; send one payload, receive one payload, in order."""

    @abstractmethod
    def send_nowait(self, payload: bytes) -> bool:
        """Queue one payload; False when the high-water mark is reached (nothing queued)."""

    @abstractmethod
    def recv_nowait(self) -> bytes | None:
        """The next payload, or None when none is ready. Malformed frames are dropped and logged."""

    def _recv_item(self) -> bytes | None:
        return self.recv_nowait()

    async def send(self, payload: bytes, timeout: float | None = None) -> None:
        """Send, waiting (without blocking the loop) while the high-water mark is reached."""
        await self._await_ready(lambda: True if self.send_nowait(payload) else None, timeout)

    async def recv(self, timeout: float | None = None) -> bytes:
        """Wait for the next payload."""
        return await self._await_ready(self.recv_nowait, timeout)

    def send_blocking(self, payload: bytes, timeout: float | None = None) -> None:
        """Send from a plain thread, waiting while the high-water mark is reached."""
        self._block_ready(lambda: True if self.send_nowait(payload) else None, timeout)

    def recv_blocking(self, timeout: float | None = None) -> bytes:
        """Receive from a plain thread."""
        return self._block_ready(self.recv_nowait, timeout)


class ChildEnd(_End["tuple[bytes, bytes]"]):
    """ROUTER semantics: many peers, each known by the identity its messages came with."""

    @abstractmethod
    def send_nowait(self, peer: bytes, payload: bytes) -> bool:
        """Queue one payload to ``peer``; False at the high-water mark.

        A peer this end does not know (never heard from, or gone) raises TransportError.
        """

    @abstractmethod
    def recv_nowait(self) -> "tuple[bytes, bytes] | None":
        """The next ``(peer, payload)``, or None. Malformed frames are dropped and logged."""

    @property
    @abstractmethod
    def peers(self) -> "frozenset[bytes]":
        """Identities of the peers this end has received from."""

    def send_all(self, payload: bytes) -> int:
        """Send ``payload`` to every known peer, best effort; returns how many took it."""
        sent = 0
        for peer in self.peers:
            try:
                sent += bool(self.send_nowait(peer, payload))
            except TransportError:
                continue
        return sent

    def _recv_item(self) -> "tuple[bytes, bytes] | None":
        return self.recv_nowait()

    async def send(self, peer: bytes, payload: bytes, timeout: float | None = None) -> None:
        await self._await_ready(lambda: True if self.send_nowait(peer, payload) else None, timeout)

    async def recv(self, timeout: float | None = None) -> "tuple[bytes, bytes]":
        return await self._await_ready(self.recv_nowait, timeout)

    def send_blocking(self, peer: bytes, payload: bytes, timeout: float | None = None) -> None:
        self._block_ready(lambda: True if self.send_nowait(peer, payload) else None, timeout)

    def recv_blocking(self, timeout: float | None = None) -> "tuple[bytes, bytes]":
        return self._block_ready(self.recv_nowait, timeout)
