"""The circuit breaker: closed, open (fail fast), half-open (one trial call decides)."""
from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` failures in a row; after ``reset_timeout`` s lets one trial through.

    Thread-safe. A failure is a crash, a failed (re)start, or a run of missed heartbeats;
    a slow call that times out is not the worker's failure and does not count. Any answer
    (a call's reply, a heartbeat echo) ends a run of failures. ``failures`` may be read
    without the lock, as a cheap "is there anything to reset" check on the call path.
    """

    def __init__(self, threshold: int, reset_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1:
            raise ValueError(f"the failure threshold must be at least 1, not {threshold}")
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self.failures = 0  # failures in a row
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._trial or self._clock() - self._opened_at >= self.reset_timeout:
            return HALF_OPEN
        return OPEN

    def allow(self) -> str | None:
        """Whether a call may go: ``"closed"``, ``"trial"`` (the half-open trial), or None (fail fast)."""
        with self._lock:
            state = self._state_locked()
            if state == CLOSED:
                return CLOSED
            if state == HALF_OPEN and not self._trial:
                self._trial = True
                return "trial"
            return None

    def record_success(self) -> None:
        """A call or heartbeat succeeded: the failure run ends; a trial closes the circuit."""
        with self._lock:
            if self._opened_at is None or self._trial:
                self.failures = 0
                self._opened_at = None
                self._trial = False

    def record_failure(self) -> None:
        """A failure: count it; at the threshold, or when a trial fails, open the circuit."""
        with self._lock:
            self.failures += 1
            if self._trial or self.failures >= self.threshold:
                self._opened_at = self._clock()
                self._trial = False

    def end_trial(self) -> None:
        """A trial that neither succeeded nor failed (say, a timeout) lets the next call try."""
        with self._lock:
            self._trial = False

    def trip(self) -> None:
        """Open the circuit now."""
        with self._lock:
            self.failures = max(self.failures, self.threshold)
            self._opened_at = self._clock()
            self._trial = False

    def reset(self) -> None:
        """Close the circuit (a manual restart)."""
        with self._lock:
            self.failures = 0
            self._opened_at = None
            self._trial = False
