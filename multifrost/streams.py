"""Streamed calls, parent side: ``for x in worker.stream.rows(10)`` and ``async for x in worker.astream.rows(10)``.

A stream is a CALL asking for a stream (``mf_call.stream.window``) to a worker that announced
the ``stream`` extension. The worker sends STREAM_ITEM messages, then a RESPONSE (or ERROR),
and holds back once it is a window ahead; the iterator grants more with CREDIT as its
consumer takes items. Leaving early (``close()``, ``break``, garbage collection) sends CANCEL.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from . import extensions, protocol, tracing
from .codec import pack_message
from .errors import CallTimeoutError, MultifrostError

log = logging.getLogger(__name__)

_SEND_RETRY = 0.01  # seconds between tries while the high-water mark refuses the stream's CALL


class _Ended(Exception):
    """The stream's buffer is empty and its end (a RESPONSE/ERROR message, or a failure) is in."""

    def __init__(self, end: Any) -> None:
        super().__init__()
        self.end = end


class _StreamState:
    """What the channel hands a stream (under its lock for the sync API): items, then the end."""

    __slots__ = ("buffer", "end", "waiter")

    def __init__(self) -> None:
        self.buffer: deque = deque()
        self.end: Any = None
        self.waiter: Any = None

    def deliver(self, message: protocol.Message) -> Any:
        """An item or the end arrived: returns the waiter to wake, if one waits."""
        if message.type == protocol.STREAM_ITEM:
            self.buffer.append(message.raw.get("item"))
        else:
            self.end = message
        waiter, self.waiter = self.waiter, None
        return waiter

    def fail(self, error: MultifrostError) -> Any:
        self.end = error
        waiter, self.waiter = self.waiter, None
        return waiter

    def ready(self) -> bool:
        return bool(self.buffer) or self.end is not None

    def take(self) -> Any:
        if self.buffer:
            return self.buffer.popleft()
        raise _Ended(self.end)


class _Stream:
    """What both iterators share: opening the call, credit, the end, and cancelling."""

    def __init__(self, worker, function: str, args: tuple, timeout: Any, namespace: str | None, window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        channel = worker._channel
        agreed = channel.extensions if channel is not None else extensions.NONE
        if extensions.STREAM not in agreed:
            raise MultifrostError(f"stream {function}(): {worker._target.describe()} does not speak the 'stream' "
                                  f"extension (a Multifrost v4 worker of another implementation, or not started); "
                                  f"call it with call/acall to get all the items in one list")
        self._worker = worker
        self._channel = channel
        self._what = f"stream {function}() from {worker._target.describe()}"
        self._window = window
        self._consumed = 0
        self._granted_at = 0  # items consumed when credit was last granted
        self._state = _StreamState()
        self._closed = False
        self._span: Any
        self._span, traceparent = (tracing.client_span(function) if tracing.ENABLED and tracing.recording()
                                  else (None, None))
        self._id, self._payload, self._timeout, self._permit = worker._prepare(
            function, args, timeout, namespace, window=window, traceparent=traceparent)
        self._started = time.perf_counter()
        channel.add_stream(self._id, self._state)

    def _took(self) -> None:
        """An item was handed to the consumer: grant credit every half window."""
        self._consumed += 1
        if self._consumed - self._granted_at >= max(1, self._window // 2):
            count, self._granted_at = self._consumed - self._granted_at, self._consumed
            self._post(extensions.credit(self._id, count))

    def _post(self, message: dict) -> None:
        try:
            if not self._channel.post(pack_message(message)):
                log.debug("%s: the worker is not reading; a %s was not sent", self._what, message["type"])
        except MultifrostError:  # the worker is gone: nothing to tell it
            pass

    def _ended(self, end: Any) -> None:
        """The stream's end is in: StopIteration semantics for a RESPONSE, else raise."""
        self._closed = True
        if isinstance(end, BaseException):
            self._worker._failed(end, self._started, self._permit)
            self._end_span(end)
            raise end
        try:
            self._worker._finish(end, self._started, self._permit)  # raises RemoteCallError for an ERROR
        except BaseException as exc:
            self._end_span(exc)
            raise
        self._end_span()

    def _end_span(self, error: BaseException | None = None) -> None:
        span, self._span = self._span, None
        if span is not None:
            tracing.end(span, error)

    def _failed(self, exc: BaseException) -> None:
        """Waiting failed (timeout, the worker gone, the consumer cancelled): stop the stream."""
        if not self._closed:
            self._worker._failed(exc, self._started, self._permit)
            self._end_span(exc)
            self._stop()

    def _stop(self) -> None:
        """Leave early: forget the stream and tell the worker to close the generator."""
        if self._closed:
            return
        self._closed = True
        self._channel.drop_stream(self._id)
        self._post(extensions.cancel(self._id))
        self._end_span()
        self._worker._end_trial(self._permit)


class SyncStream(_Stream):
    """The sync API's stream: an iterator and a context manager; ``timeout`` bounds each item."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._channel.post(self._payload):
            if deadline is not None and time.monotonic() >= deadline:
                self._failed(CallTimeoutError(f"{self._what}: could not send within the timeout"))
                raise CallTimeoutError(f"{self._what}: could not send within the timeout")
            time.sleep(_SEND_RETRY)

    def __iter__(self) -> "SyncStream":
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        try:
            item = self._channel.next_in(self._state, deadline, self._what)
        except _Ended as ended:
            end = ended.end
        except BaseException as exc:
            self._failed(exc)
            raise
        else:
            self._took()
            return item
        self._ended(end)  # outside the except block: an error raised here does not chain _Ended
        raise StopIteration

    def close(self) -> None:
        """Stop the stream: the worker's generator sees GeneratorExit."""
        self._stop()

    def __enter__(self) -> "SyncStream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):  # garbage-collected while open: maybe inside the channel's lock
            self._closed = True
            self._channel.post_soon(self._id, pack_message(extensions.cancel(self._id)))
            self._end_span()


class AsyncStream(_Stream):
    """The async API's stream: an async iterator and an async context manager."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sent = self._channel.post(self._payload)
        self._loop = asyncio.get_running_loop()

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        try:
            if not self._sent:
                await self._send_when_ready()
            item = await self._channel.next_in(self._state, self._timeout, self._what)
        except _Ended as ended:
            end = ended.end
        except BaseException as exc:
            self._failed(exc)
            raise
        else:
            self._took()
            return item
        self._ended(end)
        raise StopAsyncIteration

    async def _send_when_ready(self) -> None:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._channel.post(self._payload):
            if deadline is not None and time.monotonic() >= deadline:
                raise CallTimeoutError(f"{self._what}: could not send within the timeout")
            await asyncio.sleep(_SEND_RETRY)
        self._sent = True

    async def aclose(self) -> None:
        """Stop the stream: the worker's generator sees GeneratorExit."""
        self._stop()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            loop = self._loop
            try:
                loop.call_soon_threadsafe(self._stop)
            except RuntimeError:  # the loop is closed: the worker went with it
                pass
