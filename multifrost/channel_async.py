"""The async call channel: awaitable calls on one event loop over one ParentEnd.

The loop's reader callback on the end's descriptor is the only reader: it takes every
reply ready in one pass and resolves the waiting futures. Calls send straight from their
task; when a send hides a reply, the end calls the reader back (``set_reader``) and the
pass runs in the loop thread: at once, or, where the end's check costs a system call, once
after the sends of one turn of the loop (``loop.call_soon``). See shared PERFORMANCE.md (design C).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import TYPE_CHECKING, Any

from . import protocol
from .channel_base import SEND_RETRY, OutputHandler, _Channel
from .codec import Limits, Payload
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
        self._reading = False  # a pass of the reader runs (a send inside it asks for one more round)
        self._again = False
        self._deadlines = Deadlines(self._loop)
        self._timed: set[str] = set()  # ids whose reply's arrival time timed_request wants
        self._arrived: dict[str, float] = {}
        self._loop.add_reader(self._fd, self.drain)
        end.set_reader(self._hidden, self._loop.call_soon)

    async def request(self, msg_id: str, payload: Payload, timeout: float | None, what: str) -> protocol.Message:
        """Send ``payload`` and wait for the reply carrying ``msg_id``."""
        if self._failure is not None:
            raise self._failure
        future = self._loop.create_future()
        self._pending[msg_id] = future
        try:
            if timeout is not None:
                self._deadlines.add(timeout, future, what)
            if not self._put(payload):
                await self._send_when_ready(future, payload)
            return await future
        finally:
            self._pending.pop(msg_id, None)

    # -- issue 15 hooks: control messages and streams -----------------------------------------

    def post(self, payload: Payload) -> bool:
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
            if timeout is not None:
                self._deadlines.add(timeout, future, what)
            try:
                await future
            finally:
                if stream.waiter is future:
                    stream.waiter = None
        return stream.take()

    async def _send_when_ready(self, future: asyncio.Future, payload: Payload) -> None:
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

    def _hidden(self) -> None:
        """The end says a send (on this loop) hid a reply: a pass of the reader now, or, when the
        send came from inside a pass (an output handler posting), one more round of that pass."""
        if self._reading:
            self._again = True
        else:
            self.drain()

    def drain(self) -> None:
        """The reader: take every ready message and hand it out (the add_reader callback)."""
        if self._reading:  # called from inside a pass: it takes another round instead
            self._again = True
            return
        self._reading = True
        try:
            again = True
            while again:
                self._again = False
                self._ready.set()
                outputs: list = []
                if not self.end.closed:
                    payloads = self.end.recv_all()
                    self._route(payloads, list(map(self._parse, payloads)), outputs)
                    self._check_drops(outputs)
                self._hand_out(outputs)
                again = self._again
        finally:
            self._reading = False

    async def timed_request(self, msg_id: str, payload: Payload, timeout: float | None,
                            what: str) -> tuple[protocol.Message, float]:
        """``request``, and when the reader took its reply (``time.time()``): a heartbeat's round
        trip ends there, not when the waiting task gets its turn on a busy loop."""
        self._timed.add(msg_id)
        try:
            reply = await self.request(msg_id, payload, timeout, what)
            return reply, self._arrived.pop(msg_id, None) or time.time()
        finally:
            self._timed.discard(msg_id)
            self._arrived.pop(msg_id, None)

    def _resolve(self, future: asyncio.Future, message: protocol.Message) -> None:
        if not future.done():
            if self._timed and message.id in self._timed:
                self._arrived[message.id] = time.time()
            future.set_result(message)

    def _fail(self, future: asyncio.Future, error: MultifrostError) -> None:
        if not future.done():
            future.set_exception(error)

    def fail_all(self, error: MultifrostError, *, final: bool = False) -> None:
        """Fail every call in flight with ``error`` (crash, close); ``final`` fails later calls too."""
        self._fail_pending(error, final)

    def close(self) -> None:
        self._deadlines.close()
        self._loop.remove_reader(self._fd)
        self.end.set_reader(None)
        self.fail_all(self._failure or TransportClosed("the worker was closed"), final=True)


class Deadlines:
    """The timeouts of one channel's calls: a heap and one loop timer, armed for the earliest
    (instead of a ``call_later`` per call). A call that ends leaves its entry behind; entries
    of ended calls are dropped when they reach the top, or all at once when they pile up."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future, str]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")
        self._compact_at = _COMPACT_MIN

    def add(self, timeout: float, future: asyncio.Future, what: str) -> None:
        """Fail ``future`` with CallTimeoutError unless it is done within ``timeout`` seconds."""
        when = self._loop.time() + timeout
        heap = self._heap
        heapq.heappush(heap, (when, next(self._order), future, what))
        if when < self._armed_for:
            self._arm(when)
        if len(heap) >= self._compact_at:
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)
            self._compact_at = max(_COMPACT_MIN, 2 * len(heap))

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = self._loop.call_at(when, self._due)

    def _due(self) -> None:
        self._timer, self._armed_for = None, float("inf")
        heap, now = self._heap, self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, future, what = heapq.heappop(heap)
            if not future.done():
                future.set_exception(CallTimeoutError(f"{what} timed out"))
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()


_COMPACT_MIN = 1024  # entries: below this the heap is never swept for ended calls
