"""Call metrics of one ParentWorker: counters and a bounded latency window, cheap on the call path."""
from __future__ import annotations

import threading
from array import array

WINDOW = 2048


class Metrics:
    """Counters plus the latencies of the last ``window`` calls (a ring: bounded memory).

    ``record_*`` run on every call, so they only bump integers and write one ring slot;
    percentiles are computed when ``snapshot()`` is asked for.
    """

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self._window = array("d", bytes(8 * window))
        self._size = window
        self._next = 0
        self._filled = 0
        self.requests = 0
        self.succeeded = 0
        self.failed = 0
        self.timed_out = 0
        self.in_flight = 0
        self.restarts = 0
        self.heartbeat_rtt_last_ms: float | None = None
        self._rtt_sum = 0.0
        self._rtt_count = 0
        self.circuit_state = "closed"

    def call_started(self) -> None:
        self.requests += 1
        self.in_flight += 1

    def call_finished(self, seconds: float, outcome: str) -> None:
        """``outcome`` is ``"ok"``, ``"error"`` or ``"timeout"``."""
        with self._lock:
            self.in_flight -= 1
            if outcome == "ok":
                self.succeeded += 1
            elif outcome == "timeout":
                self.timed_out += 1
            else:
                self.failed += 1
            self._window[self._next] = seconds
            self._next = (self._next + 1) % self._size
            self._filled = min(self._filled + 1, self._size)

    def heartbeat(self, rtt_ms: float) -> None:
        self.heartbeat_rtt_last_ms = rtt_ms
        self._rtt_sum += rtt_ms
        self._rtt_count += 1

    def snapshot(self) -> dict:
        """A plain dict of every counter and latency percentile (milliseconds)."""
        with self._lock:
            latencies = sorted(self._window[:self._filled]) if self._filled < self._size else sorted(self._window)
        return {
            "requests_total": self.requests,
            "requests_succeeded": self.succeeded,
            "requests_failed": self.failed,
            "requests_timed_out": self.timed_out,
            "in_flight": self.in_flight,
            "latency_ms": {
                "p50": _percentile(latencies, 0.50),
                "p90": _percentile(latencies, 0.90),
                "p99": _percentile(latencies, 0.99),
                "max": latencies[-1] * 1000 if latencies else None,
                "window": len(latencies),
            },
            "heartbeat_rtt_ms": {
                "last": self.heartbeat_rtt_last_ms,
                "avg": self._rtt_sum / self._rtt_count if self._rtt_count else None,
            },
            "restarts": self.restarts,
            "circuit_state": self.circuit_state,
        }


def _percentile(sorted_values, q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index] * 1000
