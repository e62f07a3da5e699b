"""The async call channel: awaitable calls on one event loop over one ParentEnd.

The loop's reader callback on the end's descriptor is the only reader: it takes every
reply ready in one pass and resolves the waiting futures. Calls send straight from their
task; when a send hides a reply, the end asks for one more pass (``set_reader``), which
runs on the loop's next turn. See shared PERFORMANCE.md (design C).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from . import protocol
from .channel_base import SEND_RETRY, OutputHandler, _Channel
from .codec import Limits
from .errors import CallTimeoutError, MultifrostError, TransportClosed
from .transports import ParentEnd

if TYPE_CHECKING:
    from .streams import _StreamState


class AsyncChannel(_Channel):
    """Awaitable calls on one event loop; replies are read by ``loop.add_reader``'s callback."""

    def __init__(self, end: ParentEnd, on_output: OutputHandler, limits: Limits | None = None) -> None:
        super().__init__(end, on_output, limits)
        self._loop = asyncio.get_running_loop()
        self._fd = end.fileno()
        self._ready = asyncio.Event()
        self._pass_due = False
        self._loop.add_reader(self._fd, self.drain)
        end.set_reader(self._pass_soon)

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
                await future
            finally:
                if timer is not None:
                    timer.cancel()
                if stream.waiter is future:
                    stream.waiter = None
        return stream.take()

    async def _send_when_ready(self, future: asyncio.Future, payload: bytes) -> None:
        """Refused at the high-water mark (or no peer yet): retry after each pass of the reader,
        and every ``SEND_RETRY`` seconds."""
        while not future.done():
            self._ready.clear()
            if self._put(payload):
                return
            waiter = self._loop.create_task(self._ready.wait())
            try:
                await asyncio.wait([waiter, future], timeout=SEND_RETRY, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        future.result()  # raises the timeout or failure that ended the wait

    def _pass_soon(self) -> None:
        """The end says a send hid a reply: one more pass of the reader, on the loop's next turn."""
        if not self._pass_due:
            self._pass_due = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        """The reader: take every ready message and hand it out (the add_reader callback)."""
        self._pass_due = False
        self._ready.set()
        outputs: list = []
        if not self.end.closed:
            self._take_all(outputs)
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
        self.end.set_reader(None)
        self.fail_all(self._failure or TransportClosed("the worker was closed"), final=True)


def _expire(future: asyncio.Future, what: str) -> None:
    if not future.done():
        future.set_exception(CallTimeoutError(f"{what} timed out"))
