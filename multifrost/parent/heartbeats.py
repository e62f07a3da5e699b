"""Heartbeat bookkeeping for both APIs, as a pure state machine: no clock, no I/O.

A heartbeat goes out every ``interval`` seconds whether or not earlier ones were answered,
and each waits up to ``timeout`` seconds for its echo. The worker goes *silent* when a
heartbeat's timeout passes while ``max_misses`` or more heartbeats sent since the last echo
are unanswered: at most ``max_misses * interval + timeout`` after it stopped answering, and
``interval + timeout`` when ``timeout > (max_misses - 1) * interval`` (4 s with an interval
of 1 s and the default timeout 3 s and 3 misses). Any echo ends a silence. The drivers (the
sync supervisor thread, the async tasks) send, wait and read the clock; they pass ``now``.
"""
from __future__ import annotations


class Heartbeats:
    """When to send the next heartbeat, which ones are overdue, and whether the worker is silent."""

    def __init__(self, interval: float, timeout: float, max_misses: int, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.max_misses = max(1, max_misses)
        self.restart(now)

    def restart(self, now: float) -> None:
        """A (re)started worker: nothing outstanding, not silent, the first heartbeat an interval away."""
        self.next_send = now + self.interval
        self.unanswered = 0
        self.silent = False
        self._deadlines: dict[str, float] = {}  # msg_id -> when its echo is overdue, in send order

    def due(self, now: float) -> bool:
        return now >= self.next_send

    def sent(self, msg_id: str, now: float) -> None:
        self._deadlines[msg_id] = now + self.timeout
        self.unanswered += 1
        self.next_send += self.interval  # on the schedule, not drifting with the driver's lateness
        if self.next_send <= now:  # unless the driver stalled for a whole interval: no burst after it
            self.next_send = now + self.interval

    def echoed(self, msg_id: str | None = None) -> bool:
        """An echo arrived (of ``msg_id``, or of a ping): True when it ends a silence."""
        if msg_id is not None:
            self._deadlines.pop(msg_id, None)
        self.unanswered = 0
        ended, self.silent = self.silent, False
        return ended

    def overdue(self, now: float) -> list[str]:
        """Outstanding heartbeats whose timeout has passed (report each with ``expired``)."""
        return [msg_id for msg_id, deadline in self._deadlines.items() if deadline <= now]

    def expired(self, msg_id: str) -> bool:
        """``msg_id`` got no echo within the timeout: True when the worker turns silent now."""
        if self._deadlines.pop(msg_id, None) is None or self.silent:
            return False
        self.silent = self.unanswered >= self.max_misses
        return self.silent

    def next_event(self) -> float:
        """When something is next due: a heartbeat to send, or an echo overdue."""
        return min(self.next_send, *self._deadlines.values()) if self._deadlines else self.next_send
