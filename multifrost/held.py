"""Replies a peer is not reading yet: held in order per peer within a byte budget.

A child's send is refused when a peer's queue is at the high-water mark (the peer stops
reading). Its replies wait here and leave, in order, when the socket next has room; past
``budget`` bytes for one peer its further replies are dropped and counted, so that a client
that never reads costs the service bounded memory and no CPU. Not thread-safe: the child
calls it under its I/O lock.
"""
from __future__ import annotations

import logging
import time
from collections import deque

from .codec import Payload
from .errors import TransportError
from .transports import ChildEnd

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 32 * 1024 * 1024
LOG_EVERY = 5.0  # seconds: at most one log line per peer in this time


class HeldReplies:
    """Per-peer queues of payloads refused at the high-water mark."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        if type(budget) is not int or budget < 0:
            raise ValueError(f"max_held_bytes must be an int >= 0, got {budget!r}")
        self.budget = budget
        self.dropped = 0  # replies dropped since start (over the budget, or the peer was gone)
        self._queues: dict[bytes, deque[Payload]] = {}
        self._sizes: dict[bytes, int] = {}
        self._logged: dict[bytes, tuple[float, int]] = {}  # peer -> (last log time, drops since)

    def __bool__(self) -> bool:
        return bool(self._queues)

    @property
    def bytes_held(self) -> int:
        return sum(self._sizes.values())

    def send(self, end: ChildEnd, peer: bytes, payload: Payload) -> bool:
        """Send now if nothing waits for ``peer`` and the socket takes it (True); else hold or drop it."""
        try:
            if peer not in self._queues and end.send_nowait(peer, payload):
                return True
        except TransportError as exc:
            self.drop(peer, str(exc))
            return False
        size = self._sizes.get(peer, 0) + len(payload)
        if size > self.budget:
            self.drop(peer, f"it is not reading and {self._sizes.get(peer, 0)} bytes wait for it "
                            f"(max_held_bytes={self.budget})")
            return False
        self._queues.setdefault(peer, deque()).append(payload)
        self._sizes[peer] = size
        return False

    def flush(self, end: ChildEnd) -> None:
        """Send what each peer's queue lets go now, in order; forget peers that are gone."""
        for peer in list(self._queues):
            queue = self._queues[peer]
            try:
                while queue and end.send_nowait(peer, queue[0]):
                    self._sizes[peer] -= len(queue.popleft())
            except TransportError as exc:
                self.dropped += len(queue) - 1
                self.drop(peer, str(exc))
                queue.clear()
            if not queue:
                del self._queues[peer], self._sizes[peer]

    def drop(self, peer: bytes, reason: str) -> None:
        """Count one dropped reply to ``peer``; log it unless that peer had a line lately."""
        self.dropped += 1
        now = time.monotonic()
        last, since = self._logged.get(peer, (float("-inf"), 0))
        if now - last < LOG_EVERY:
            self._logged[peer] = (last, since + 1)
            return
        self._logged[peer] = (now, 0)
        more = f" (and {since} more since the last line)" if since else ""
        log.warning("dropped a reply to peer %s: %s%s", peer.hex(), reason, more)
