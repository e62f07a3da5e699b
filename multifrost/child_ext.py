"""The worker side of the negotiated extensions: per-call contexts (cancel, deadline, trace),
CANCEL and CREDIT messages, and handing generator methods to child_streams.

A call from a v4 parent carries no ``mf_call`` metadata and, unless its method is a
generator, leaves ``prepare`` at once: the plain call path stays as it was.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from . import extensions, protocol
from .child_methods import CO_ASYNC_GENERATOR, CO_GENERATOR, code_flags
from .current_call import CallContext, enter, leave
from .errors import CallTimeoutError

if TYPE_CHECKING:
    import asyncio

    from .child import ChildWorker
    from .child_streams import StreamRun

log = logging.getLogger(__name__)

#: ``prepare`` took the call over (a stream): the worker does nothing more with it.
TAKEN: Any = object()


class CallCancelledError(Exception):
    """The caller cancelled the call; its ERROR goes to a caller that no longer waits for it."""


DEADLINE = "the call's deadline passed"


class WorkerExtensions:
    """One worker's calls that carry extension data, keyed by (peer, call id)."""

    def __init__(self, worker: ChildWorker) -> None:
        self._worker = worker
        self._calls: dict[tuple[bytes, str | None], CallContext | StreamRun] = {}
        self._kinds: dict[Callable, str | None] = {}
        self._lock = threading.Lock()  # for the counts
        #: Calls not started because their deadline had passed / they were cancelled, and calls stopped while running.
        self.counts = {"expired_before_start": 0, "cancelled_before_start": 0, "cancelled": 0, "deadline_passed": 0}

    def _kind(self, fn: Callable) -> str | None:
        kind = self._kinds.get(fn, False)
        if kind is False:
            flags = code_flags(fn)
            kind = "agen" if flags & CO_ASYNC_GENERATOR else "gen" if flags & CO_GENERATOR else None
            self._kinds[fn] = kind
        return kind  # type: ignore[return-value]  # never False here

    def prepare(self, peer: bytes, message: protocol.Message, fn: Callable, is_async: bool, args: list) -> Any:
        """None when the call needs no extension (no ``mf_call``, not a generator method); else
        ``(fn, is_async, context)`` for the worker to run, or TAKEN (streams run here)."""
        meta = message.raw.get("metadata")
        extras = meta.get(extensions.CALL_KEY) if type(meta) is dict else None
        kind = self._kind(fn)
        if extras is None and kind is None:
            return None
        context = None
        if type(extras) is dict:
            timeout = extras.get("timeout") if extras else None
            deadline = (time.monotonic() + timeout if isinstance(timeout, (int, float))
                        and not isinstance(timeout, bool) and math.isfinite(timeout) else None)
            traceparent = extras.get("traceparent") if extras else None
            context = CallContext(message.id, deadline, traceparent if isinstance(traceparent, str) else None)
            key = (peer, message.id)
        if kind is not None:
            from .child_streams import StreamRun, acollect, collect  # a worker without generators never loads it
            stream = extras.get("stream") if isinstance(extras, dict) else None
            window = stream.get("window") if isinstance(stream, dict) else None
            if isinstance(window, int) and not isinstance(window, bool) and window >= 1:
                assert message.id is not None  # the worker answered a CALL without an id before this
                run = StreamRun(self._worker, peer, message.id, context, window, self)
                self._calls[key] = run  # one dict operation: atomic, like those below
                run.start(fn, args, kind)
                return TAKEN
            fn, is_async = (acollect(fn), True) if kind == "agen" else (collect(fn), False)
        if context is not None:
            self._calls[key] = context
        return fn, is_async, context

    def on_control(self, peer: bytes, message: protocol.Message) -> None:
        """A CANCEL or CREDIT for a call of ``peer``; one for a call that already ended is ignored."""
        target = self._calls.get((peer, message.id))
        if target is None:
            log.debug("ignored a %s for unknown call %s", message.type, message.id)
            return
        if message.type == protocol.CANCEL:
            context = target if isinstance(target, CallContext) else target.context
            if context is not None and context.cancel("the caller cancelled the call"):
                self._count("cancelled")
        elif not isinstance(target, CallContext):  # a StreamRun
            count = message.raw.get("credit")
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                target.grant(count)

    def cancel_streams(self, reason: str) -> None:
        """End every stream (the worker is stopping): generators waiting for credit close now."""
        runs = [run for run in list(self._calls.values()) if not isinstance(run, CallContext)]
        for run in runs:
            run.context.cancel(reason)

    def done(self, peer: bytes, call_id: str | None) -> None:
        self._calls.pop((peer, call_id), None)

    # -- running with a context (called by ChildWorker on the thread or task that runs the call) ----

    def check_start(self, context: CallContext) -> None:
        """Refuse to start a call that was cancelled, or whose deadline passed, while it queued."""
        if context.expired():
            self._count("expired_before_start")
            raise CallTimeoutError(f"not started: {DEADLINE} before the worker took it up")
        if context.cancelled:
            self._count("cancelled_before_start")
            raise CallCancelledError(f"not started: {context.reason}")

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def run(self, peer: bytes, context: CallContext, fn: Callable, args: list) -> Any:
        """Run a plain method as the current call."""
        try:
            if context.deadline is not None or context.cancelled:
                self.check_start(context)
            token = enter(context)
            try:
                if context.traceparent is None:
                    return fn(*args)
                from .tracing import server_span  # only calls that carry trace context load it

                with server_span(context, getattr(fn, "__name__", "call")):
                    return fn(*args)
            finally:
                leave(token)
        finally:
            self.done(peer, context.id)

    async def arun(self, peer: bytes, context: CallContext, fn: Callable, args: list) -> Any:
        """Run an ``async def`` method as the current call; a cancel or its deadline cancels its task."""
        import asyncio  # only a worker with async methods gets here; the others never load it

        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # a method's coroutine runs as a task
        timer = None
        try:
            self.check_start(context)
            context.on_cancel(lambda: _cancel_task(loop, task))
            remaining = context.remaining
            if remaining is not None:
                timer = loop.call_at(loop.time() + remaining, self._deadline_passed, context)
            enter(context)  # the task's own context: nothing to undo
            if context.traceparent is None:
                return await fn(*args)
            from .tracing import server_span

            with server_span(context, getattr(fn, "__name__", "call")):
                return await fn(*args)
        except asyncio.CancelledError:
            if not context.cancelled:
                raise  # the worker is stopping
            task.uncancel()  # the cancel was ours, and it is handled here
            if context.reason == DEADLINE:
                raise CallTimeoutError(f"{DEADLINE} while it ran") from None
            raise CallCancelledError(context.reason) from None
        finally:
            if timer is not None:
                timer.cancel()
            self.done(peer, context.id)

    def _deadline_passed(self, context: CallContext) -> None:
        if context.cancel(DEADLINE):
            self._count("deadline_passed")


def _cancel_task(loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
    """Cancel ``task`` from any thread."""
    try:
        if loop.is_closed():
            return
        loop.call_soon_threadsafe(task.cancel)
    except RuntimeError:  # the loop closed meanwhile
        pass
