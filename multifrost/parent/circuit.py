"""The circuit breaker: closed, open (fail fast), half-open (one trial call decides).

Pure: every method that depends on time takes ``now``; the lifecycle core owns the one
breaker of a worker, and its drivers serialise access to it.
"""
from __future__ import annotations

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` failures in a row; after ``reset_timeout`` s lets one trial through.

    A failure is a crash, a failed (re)start, or a run of missed heartbeats; a slow call that
    times out is not the worker's failure and does not count. Any answer (a call's reply, a
    heartbeat echo) ends a run of failures. ``failures`` is a cheap "anything to reset" check.
    """

    def __init__(self, threshold: int, reset_timeout: float) -> None:
        if threshold < 1:
            raise ValueError(f"the failure threshold must be at least 1, not {threshold}")
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self.failures = 0  # failures in a row
        self.opened_at: float | None = None  # None while closed (the call path reads it without a lock)
        self._trial = False

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return CLOSED
        if self._trial or now - self.opened_at >= self.reset_timeout:
            return HALF_OPEN
        return OPEN

    def half_open_at(self) -> float | None:
        """When an open circuit turns half-open (None when it is not open)."""
        if self.opened_at is None or self._trial:
            return None
        return self.opened_at + self.reset_timeout

    def allow(self, now: float) -> str | None:
        """Whether a call may go: ``"closed"``, ``"trial"`` (the half-open trial), or None (fail fast)."""
        state = self.state(now)
        if state == CLOSED:
            return CLOSED
        if state == HALF_OPEN and not self._trial:
            self._trial = True
            return "trial"
        return None

    def record_success(self) -> None:
        """A call or heartbeat succeeded: the failure run ends; a trial closes the circuit."""
        if self.opened_at is None or self._trial:
            self.failures = 0
            self.opened_at = None
            self._trial = False

    def record_failure(self, now: float) -> None:
        """A failure: count it; at the threshold, or when a trial fails, open the circuit."""
        self.failures += 1
        if self._trial or self.failures >= self.threshold:
            self.opened_at = now
            self._trial = False

    def end_trial(self) -> None:
        """A trial that neither succeeded nor failed (say, a timeout) lets the next call try."""
        self._trial = False

    def trip(self, now: float) -> None:
        """Open the circuit now."""
        self.failures = max(self.failures, self.threshold)
        self.opened_at = now
        self._trial = False

    def reset(self) -> None:
        """Close the circuit (a manual restart)."""
        self.failures = 0
        self.opened_at = None
        self._trial = False
