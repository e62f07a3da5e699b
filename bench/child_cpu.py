"""CPU per call of the child and the parent (from /proc), for sequential and pipelined calls.

    python bench/child_cpu.py [--transport unix] [--calls 20000] [--mode sync|async|pipe|threads] [--plain]

``--plain`` serves bench/_plain_worker.py (plain methods only: a PollLoop, no asyncio) instead of
bench/_add_worker.py (which has an async method, so it is served on asyncio).

Wall time on a shared machine is noisy; CPU time per call is not: this is the number to
compare when changing the child's path. Prints µs of CPU per call for each side and µs of wall;
``threads`` (16 threads calling one sync worker at once) also the parent's thread switches per call.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from multifrost import ParentWorker  # noqa: E402

WORKER = os.path.join(HERE, "_add_worker.py")
PLAIN_WORKER = os.path.join(HERE, "_plain_worker.py")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """Seconds of CPU (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _sync(transport: str, calls: int, method: str, script: str) -> tuple[float, float, float]:
    with ParentWorker.spawn(script, transport=transport) as worker:
        call = getattr(worker.call, method)
        for _ in range(500):
            call(1, 2)
        pid = worker.pid
        assert pid is not None
        before = cpu_of(pid), time.process_time(), time.perf_counter()
        for _ in range(calls):
            call(1, 2)
        return _per_call(before, (cpu_of(pid), time.process_time(), time.perf_counter()), calls)


def _threads(transport: str, calls: int, method: str, script: str, threads: int = 16) -> tuple[float, float, float]:
    with ParentWorker.spawn(script, transport=transport) as worker:
        call = getattr(worker.call, method)

        def caller(n: int) -> None:
            for _ in range(n):
                call(1, 2)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(caller, [500 // threads] * threads))
            pid = worker.pid
            assert pid is not None
            usage = resource.getrusage(resource.RUSAGE_SELF)
            before = cpu_of(pid), time.process_time(), time.perf_counter()
            list(pool.map(caller, [calls // threads] * threads))
            after = cpu_of(pid), time.process_time(), time.perf_counter()
        now = resource.getrusage(resource.RUSAGE_SELF)
        print(f"parent thread switches per call: {(now.ru_nvcsw - usage.ru_nvcsw) / calls:.2f} voluntary, "
              f"{(now.ru_nivcsw - usage.ru_nivcsw) / calls:.2f} involuntary")
        return _per_call(before, after, calls // threads * threads)


async def _async(transport: str, calls: int, method: str, window: int, script: str) -> tuple[float, float, float]:
    async with ParentWorker.spawn(script, transport=transport) as worker:
        call = getattr(worker.acall, method)

        async def caller(n: int) -> None:
            for _ in range(n):
                await call(1, 2)
        await caller(500)
        pid = worker.pid
        assert pid is not None
        before = cpu_of(pid), time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(calls // window) for _ in range(window)))
        return _per_call(before, (cpu_of(pid), time.process_time(), time.perf_counter()), calls)


def _per_call(before: tuple, after: tuple, calls: int) -> tuple[float, float, float]:
    """(child µs CPU, parent µs CPU, wall µs) per call."""
    child, parent, wall = ((b - a) * 1e6 / calls for a, b in zip(before, after))
    return child, parent, wall


def measure(transport: str, calls: int, mode: str, method: str = "add",
            script: str = WORKER) -> tuple[float, float, float]:
    """(child µs CPU, parent µs CPU, wall µs) per call: ``mode`` sync, async (one at a time), pipe (256)
    or threads (16 sync callers)."""
    if mode == "sync":
        return _sync(transport, calls, method, script)
    if mode == "threads":
        return _threads(transport, calls, method, script)
    return asyncio.run(_async(transport, calls, method, 1 if mode == "async" else 256, script))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", default="unix")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--mode", default="sync", choices=("sync", "async", "pipe", "threads"))
    parser.add_argument("--method", default="add")
    parser.add_argument("--plain", action="store_true", help="serve the plain-only worker (no asyncio)")
    opts = parser.parse_args()
    child, parent, wall = measure(opts.transport, opts.calls, opts.mode, opts.method,
                                  PLAIN_WORKER if opts.plain else WORKER)
    print(f"{opts.transport} {opts.mode} {opts.method}{' (plain worker)' if opts.plain else ''}: child {child:.1f} µs CPU/call, parent {parent:.1f}, wall {wall:.1f}")


if __name__ == "__main__":
    main()
