"""Wait on a ``select.poll`` by spinning a moment before sleeping, while spinning pays.

A process that sleeps in ``poll`` gives its CPU up, and the peer's answer must wake it; on a
virtual machine whose idle CPUs halt, that wake-up costs tens of microseconds each way, more
than a small call's whole work (``python bench/spin.py`` measures it). So a waiter first asks
``poll(0)`` for up to ``SPIN`` seconds and only then sleeps. A spin that catches nothing (a slow
method, an idle peer, a peer that needs the CPU this spin holds) makes the waiter sleep at once
for the next 1, 2, 4 ... ``BACKOFF`` waits; one that catches something resets that. With a
single CPU to run on, spinning would only keep the peer from answering: it never spins then.
"""
from __future__ import annotations

import os
from time import perf_counter
from typing import Callable

#: Seconds a waiter spins before it sleeps: a few round trips of a small call.
SPIN = 100e-6
#: At most this many waits sleep at once after a run of spins that caught nothing.
BACKOFF = 64

Poll = Callable[..., list]


class Spinner:
    """One waiter's spin-then-sleep ``poll``; one thread waits on it at a time.

    ``enabled`` False: a plain ``poll`` (for an end whose I/O threads need the CPU, as ZeroMQ's do).
    """

    __slots__ = ("enabled", "_skip", "_backoff")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and _cpus() > 1
        self._skip = 0  # waits left that sleep without spinning
        self._backoff = 0  # how many the next fruitless spin makes

    def poll(self, poll: Poll, wait: float | None) -> list:
        """``poll(wait)``, spinning on ``poll(0)`` first while that pays; ``wait`` is what ``poll``
        takes (milliseconds for ``select.poll``, seconds for a selector; None: no limit; 0: no spin)."""
        if wait == 0 or not self.enabled:
            return poll(wait)
        if self._skip:
            self._skip -= 1
            return poll(wait)
        end = perf_counter() + SPIN
        while True:
            ready = poll(0)
            if ready:
                self._backoff = 0
                return ready
            if perf_counter() >= end:
                break
        self._skip = self._backoff = min(BACKOFF, self._backoff * 2 or 1)
        return poll(wait)


def _cpus() -> int:
    """How many CPUs this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
