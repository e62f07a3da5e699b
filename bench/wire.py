"""What the ``multifrost.wire`` hooks cost while DEBUG is off, against a tcp call measured in the same run.

    python bench/wire.py [--calls N] [--reps R]

With the wire logger off, a message pays one level check (plus, on the parent's send, one
method call: ``_Channel._put``). A round trip is four messages' worth of hooks: the parent's
send and receive and the child's receive and send. The ratio printed is those four hooks
(and the one extra call) over the median sync tcp call.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from multifrost import ParentWorker  # noqa: E402
from multifrost.wire import DEBUG, wire_debug  # noqa: E402


class _Hooked:
    """The shape of the off path: a method that checks the level after the real work."""

    def direct(self) -> bool:
        return True

    def put(self) -> bool:
        sent = self.direct()
        if sent and wire_debug(DEBUG):
            raise AssertionError("the wire logger must be off for this benchmark")
        return sent


def _hook_ns(number: int) -> float:
    """Nanoseconds the off path adds to one round trip: 4 level checks and 1 extra method call."""
    hooked = _Hooked()
    check = min(timeit.repeat(lambda: wire_debug(DEBUG), number=number, repeat=5)) / number
    empty = min(timeit.repeat(lambda: None, number=number, repeat=5)) / number
    via_put = min(timeit.repeat(hooked.put, number=number, repeat=5)) / number
    direct = min(timeit.repeat(hooked.direct, number=number, repeat=5)) / number
    return ((check - empty) * 3 + max(0.0, via_put - direct)) * 1e9


def _call_p50_ns(calls: int) -> float:
    with ParentWorker.spawn(os.path.join(HERE, "_add_worker.py"), transport="tcp", heartbeat_interval=0) as worker:
        add = worker.call.add
        for _ in range(200):
            add(1, 2)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            start = clock()
            add(1, 2)
            samples.append(clock() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per repetition (default 5000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    opts = parser.parse_args()
    hooks, calls = [], []
    for _ in range(opts.reps):
        hooks.append(_hook_ns(200_000))
        calls.append(_call_p50_ns(opts.calls))
    hook, call = statistics.median(hooks), statistics.median(calls)
    print(f"wire hooks while off, per round trip: {hook:.0f} ns")
    print(f"sync tcp call p50: {call / 1000:.1f} µs")
    print(f"hooks / call: {100 * hook / call:.2f} %  (budget: 1 %)")


if __name__ == "__main__":
    main()
