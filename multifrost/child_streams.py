"""Running a generator method as a stream (worker side), with credit-based flow control.

The worker sends an item only while it holds credit: the window the CALL asked for, plus
what the parent grants with CREDIT messages as its consumer takes items. So the generator
never runs more than a window ahead of the consumer. A CANCEL (the consumer left early)
closes the generator where it waits: it sees GeneratorExit at its ``yield`` (an async
generator busy at an ``await`` sees CancelledError there) and its ``finally`` runs.
Without a stream request (a v4 parent, or ``call``), ``collect``/``acollect`` answer with
all the items in one list.
"""
from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Callable

from . import extensions, protocol
from .codec import Payload, pack_message
from .current_call import CallContext, enter, leave
from .tracing import server_span
from .transports import DEFAULT_MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    import asyncio

    from .child import ChildWorker
    from .child_ext import WorkerExtensions


class _Stopped(Exception):
    """The stream was cancelled while it waited for credit."""


class StreamRun:
    """One streamed call: its credit, its cancellation, and the thread or task running it."""

    def __init__(self, worker: ChildWorker, peer: bytes, call_id: str, context: CallContext | None, window: int,
                 owner: WorkerExtensions) -> None:
        self._worker = worker
        self._peer = peer
        self._id = call_id
        self.context = context if context is not None else CallContext(call_id)
        self._owner = owner
        self._allowed = window  # items it may send in all, so far
        self._sent = 0
        self._cond = threading.Condition()
        self._credit_event: asyncio.Event | None = None  # async generators only: made on the loop by _start_task
        self._in_generator = False  # async: the task is inside the generator (not waiting for credit)

    def start(self, fn: Callable, args: list, kind: str) -> None:
        worker = self._worker
        if kind == "gen":
            worker._pool.submit(self._run_sync, fn, args)
        else:
            worker._loop.call_soon_threadsafe(self._start_task, fn, args)

    def grant(self, count: int) -> None:
        """A CREDIT arrived (any thread)."""
        with self._cond:
            self._allowed += count
            self._cond.notify_all()
        event = self._credit_event
        if event is not None:
            self._worker._loop.call_soon_threadsafe(event.set)

    # -- a plain generator, on a pool thread -----------------------------------------------

    def _run_sync(self, fn: Callable, args: list) -> None:
        context = self.context
        context.on_cancel(self._wake)
        token = enter(context)
        try:
            self._owner.check_start(context)
            with server_span(context, getattr(fn, "__name__", "stream")):
                generator = fn(*args)
                try:
                    while True:
                        self._wait_credit()
                        try:
                            item = next(generator)
                        except StopIteration:
                            break
                        self._send_item(item)
                finally:
                    generator.close()  # GeneratorExit at its yield when it stopped early
            self._answer(pack_message(protocol.response(self._id, self._sent)))
        except _Stopped:
            self._answer(self._error(f"CallCancelledError: {context.reason}"))
        except Exception as exc:
            self._answer(self._worker._error_payload(self._id, exc))
        finally:
            leave(token)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _wait_credit(self) -> None:
        with self._cond:
            while self._sent >= self._allowed and not self.context.cancelled:
                self._cond.wait()
        if self.context.cancelled:
            raise _Stopped()

    # -- an async generator, as a task on the loop -----------------------------------------

    def _start_task(self, fn: Callable, args: list) -> None:
        import asyncio  # only a worker with async generators gets here; the others never load it

        worker = self._worker
        self._credit_event = asyncio.Event()
        task = worker._loop.create_task(self._run_async(fn, args))  # type: ignore[attr-defined]  # asyncio's
        worker._tasks.add(task)
        task.add_done_callback(worker._tasks.discard)
        loop = worker._loop
        self.context.on_cancel(lambda: loop.call_soon_threadsafe(self._cancel_async, task))

    def _cancel_async(self, task: asyncio.Task) -> None:
        """On the loop: a generator busy at an await gets CancelledError there; one waiting for
        credit is closed at its yield (GeneratorExit)."""
        if self._in_generator:
            task.cancel()
        elif self._credit_event is not None:
            self._credit_event.set()

    async def _run_async(self, fn: Callable, args: list) -> None:
        import asyncio

        context = self.context
        event = self._credit_event
        assert event is not None  # _start_task made it
        enter(context)
        try:
            self._owner.check_start(context)
            with server_span(context, getattr(fn, "__name__", "stream")):
                generator = fn(*args)
                try:
                    while True:
                        while self._sent >= self._allowed and not context.cancelled:
                            event.clear()
                            await event.wait()
                        if context.cancelled:
                            raise _Stopped()
                        self._in_generator = True
                        try:
                            item = await generator.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            self._in_generator = False
                        self._send_item(item)
                finally:
                    await generator.aclose()  # GeneratorExit at its yield when it stopped early
            self._answer(pack_message(protocol.response(self._id, self._sent)))
        except asyncio.CancelledError:
            if not context.cancelled:
                self._answer(self._error("Worker stopped before the stream finished"))
                raise
            task = asyncio.current_task()
            assert task is not None  # this runs as a task
            task.uncancel()
            self._answer(self._error(f"CallCancelledError: {context.reason}"))
        except _Stopped:
            self._answer(self._error(f"CallCancelledError: {context.reason}"))
        except Exception as exc:
            self._answer(self._worker._error_payload(self._id, exc))

    # -- sending ---------------------------------------------------------------------------

    def _send_item(self, item: Any) -> None:
        payload = pack_message(extensions.stream_item(self._id, item), limits=self._worker.limits,
                               gather=self._worker._io.gathers)  # large bytes items leave uncopied (unix)
        protocol.check_size(payload, DEFAULT_MAX_MESSAGE_SIZE)
        with self._cond:
            self._sent += 1
        self._worker._send(self._peer, payload)

    def _error(self, text: str) -> bytes:
        return pack_message(protocol.error(self._id, text))

    def _answer(self, payload: Payload) -> None:
        """End the stream (RESPONSE with the number of items, or ERROR) and forget it."""
        self._owner.done(self._peer, self._id)
        self._worker._send(self._peer, payload)


def collect(fn: Callable) -> Callable:
    """A plain function returning the items of generator method ``fn`` as one list."""
    @functools.wraps(fn)
    def collected(*args: Any) -> list:
        return list(fn(*args))
    return collected


def acollect(fn: Callable) -> Callable:
    """An ``async def`` returning the items of async generator method ``fn`` as one list."""
    @functools.wraps(fn)
    async def collected(*args: Any) -> list:
        return [item async for item in fn(*args)]
    return collected
