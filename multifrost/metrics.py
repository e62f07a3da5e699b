"""Call metrics of one ParentWorker: counters and a bounded latency window, cheap on the call path.

``Metrics`` is on by default: a call costs one lock round trip in ``call_started`` and one
in ``call_finished`` (a few hundred nanoseconds against a round trip of ~100 µs).
``NullMetrics`` has the same interface and skips the per-call work, for whoever wants
not even that (and for the bench that measures what metrics cost).
"""
from __future__ import annotations

import threading
from array import array
from typing import Any

WINDOW = 2048


class Metrics:
    """Counters plus the latencies of the last ``window`` calls (a ring: bounded memory).

    The per-call methods only bump integers and write one ring slot under a lock, so they
    are safe from any thread; percentiles are computed when ``snapshot()`` is asked for.
    ``restarts`` and ``circuit_state`` are plain attributes the worker sets.
    """

    enabled = True

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._lock = threading.Lock()
        self._window = array("d", bytes(8 * window))
        self._size = window
        self._next = 0
        self._filled = 0
        self._latency_sum = 0.0
        self.requests = 0
        self.succeeded = 0
        self.failed = 0
        self.timed_out = 0
        self.restarts = 0
        self.circuit_state = "closed"
        self.heartbeat_rtt_last_ms: float | None = None
        self._rtt_sum = 0.0
        self._rtt_count = 0

    @property
    def in_flight(self) -> int:
        """Calls started and not finished yet."""
        return self.requests - self.succeeded - self.failed - self.timed_out

    def call_started(self) -> None:
        """A call was sent (or is about to be)."""
        with self._lock:
            self.requests += 1

    def call_finished(self, seconds: float, outcome: str) -> None:
        """A call ended after ``seconds``; ``outcome`` is ``"ok"``, ``"error"`` or ``"timeout"``."""
        with self._lock:
            if outcome == "ok":
                self.succeeded += 1
            elif outcome == "timeout":
                self.timed_out += 1
            else:
                self.failed += 1
            self._latency_sum += seconds
            self._window[self._next] = seconds
            self._next = (self._next + 1) % self._size
            if self._filled < self._size:
                self._filled += 1

    def heartbeat(self, rtt_ms: float) -> None:
        """A heartbeat came back after ``rtt_ms`` milliseconds."""
        with self._lock:
            self.heartbeat_rtt_last_ms = rtt_ms
            self._rtt_sum += rtt_ms
            self._rtt_count += 1

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of every counter and the window's latency percentiles (milliseconds)."""
        with self._lock:
            latencies = sorted(self._window[:self._filled])
            counters = (self.requests, self.succeeded, self.failed, self.timed_out)
            latency_sum = self._latency_sum
            rtt_last, rtt_sum, rtt_count = self.heartbeat_rtt_last_ms, self._rtt_sum, self._rtt_count
        requests, succeeded, failed, timed_out = counters
        return {
            "enabled": self.enabled,
            "requests_total": requests,
            "requests_succeeded": succeeded,
            "requests_failed": failed,
            "requests_timed_out": timed_out,
            "in_flight": requests - succeeded - failed - timed_out,
            "latency_ms": {
                "p50": _percentile(latencies, 0.50),
                "p90": _percentile(latencies, 0.90),
                "p99": _percentile(latencies, 0.99),
                "max": latencies[-1] * 1000 if latencies else None,
                "window": len(latencies),
                "sum_all_calls": latency_sum * 1000,
            },
            "heartbeat_rtt_ms": {"last": rtt_last, "avg": rtt_sum / rtt_count if rtt_count else None},
            "restarts": self.restarts,
            "circuit_state": self.circuit_state,
        }

    def to_prometheus(self, prefix: str = "multifrost", labels: dict[str, str] | None = None) -> str:
        """The snapshot in the Prometheus text exposition format (version 0.0.4).

        ``labels`` (e.g. ``{"worker": "resize"}``) are put on every sample, so several
        workers can be exposed on one page.
        """
        snap = self.snapshot()
        base = dict(labels or {})
        lines: list[str] = []

        def metric(name: str, kind: str, text: str, samples: list[tuple[dict, float | None]]) -> None:
            full = f"{prefix}_{name}"
            lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} {kind}")
            for extra, value in samples:
                if value is not None:
                    lines.append(f"{full}{_labels({**base, **extra})} {_number(value)}")

        metric("requests_total", "counter", "Calls finished, by outcome.",
               [({"outcome": "ok"}, snap["requests_succeeded"]),
                ({"outcome": "error"}, snap["requests_failed"]),
                ({"outcome": "timeout"}, snap["requests_timed_out"])])
        metric("requests_in_flight", "gauge", "Calls sent and not answered yet.", [({}, snap["in_flight"])])
        latency = snap["latency_ms"]
        finished = snap["requests_succeeded"] + snap["requests_failed"] + snap["requests_timed_out"]
        metric("call_latency_seconds", "summary",
               f"Call latency: quantiles over the last {self._size} calls, sum and count over all calls.",
               [({"quantile": q}, None if latency[k] is None else latency[k] / 1000)
                for q, k in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))])
        lines.append(f"{prefix}_call_latency_seconds_sum{_labels(base)} {_number(latency['sum_all_calls'] / 1000)}")
        lines.append(f"{prefix}_call_latency_seconds_count{_labels(base)} {finished}")
        metric("call_latency_max_seconds", "gauge", f"Slowest of the last {self._size} calls.",
               [({}, None if latency["max"] is None else latency["max"] / 1000)])
        metric("heartbeat_rtt_seconds", "gauge", "Round trip of the last heartbeat.",
               [({}, None if snap["heartbeat_rtt_ms"]["last"] is None else snap["heartbeat_rtt_ms"]["last"] / 1000)])
        metric("restarts_total", "counter", "Times the worker process was restarted.", [({}, snap["restarts"])])
        metric("circuit_open", "gauge", "1 while the circuit breaker fails calls at once (open or half-open).",
               [({}, 0 if snap["circuit_state"] == "closed" else 1)])
        return "\n".join(lines) + "\n"


class NullMetrics(Metrics):
    """Metrics switched off: calls are not counted or timed; restarts, circuit state and
    heartbeats (off the call path) are still kept, because the worker reports them."""

    enabled = False

    def __init__(self) -> None:
        super().__init__(window=1)

    def call_started(self) -> None:
        """Not counted."""

    def call_finished(self, seconds: float, outcome: str) -> None:
        """Not counted."""


def _percentile(sorted_values, q: float) -> float | None:
    """Nearest-rank percentile of ``sorted_values`` (seconds), in milliseconds."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index] * 1000


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: object) -> str:
    """A label value as the exposition format wants it: backslash, newline and quote escaped."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
