"""``multifrost.current_call()``: what a running worker method may know about its call.

A plain method polls ``current_call().cancelled`` to stop early when its caller gave up, and
``.deadline`` (``time.monotonic()`` of this process, or None) to fit its work in the time left.
"""
from __future__ import annotations

import contextvars
import threading
import time
from typing import Callable


_LOCK = threading.Lock()  # one for all contexts: cancelling is rare, and a lock per call costs


class CallContext:
    """One call's cancellation state and deadline, shared by the worker's threads and its loop."""

    __slots__ = ("id", "deadline", "traceparent", "cancelled", "reason", "_on_cancel")

    def __init__(self, call_id: str | None, deadline: float | None = None, traceparent: str | None = None) -> None:
        self.id = call_id
        self.deadline = deadline
        self.traceparent = traceparent
        self.cancelled = False
        self.reason = ""
        self._on_cancel: list[Callable[[], object]] = []

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def cancel(self, reason: str) -> bool:
        """Mark the call cancelled and run the callbacks registered with ``on_cancel``; True the first time."""
        with _LOCK:
            if self.cancelled:
                return False
            self.cancelled, self.reason = True, reason
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()
        return True

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` (from whatever thread cancels) when the call is cancelled; at once if it is."""
        with _LOCK:
            if not self.cancelled:
                self._on_cancel.append(callback)
                return
        callback()

    def __repr__(self) -> str:
        return f"<CallContext {self.id} cancelled={self.cancelled} deadline={self.deadline}>"


#: What ``current_call()`` returns outside a call, or in a call without extensions (a v4 caller).
INERT = CallContext(None)

_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar("multifrost_current_call", default=INERT)


def current_call() -> CallContext:
    """The running call's context (in a worker method); a never-cancelled one without a deadline otherwise."""
    return _current.get()


#: ``enter(context)`` makes ``context`` the current call in this thread or task and returns
#: the token that ``leave(token)`` takes to undo it (the ContextVar's own methods: no wrapper to call).
enter = _current.set
leave = _current.reset
