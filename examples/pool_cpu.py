"""CPU-bound work spread over N worker processes with a WorkerPool; measures N=1 against N=2.

    python examples/pool_cpu.py [--tasks 8] [--n 60000] [--reps 3]

This one file is both sides: run plainly it is the parent; the pool spawns it again
with ``--worker``, and then it serves ``count_primes``.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from multifrost import ChildWorker
from multifrost.pool import WorkerPool


class PrimeWorker(ChildWorker):
    def count_primes(self, below: int) -> int:
        """Pure-Python trial division: CPU-bound, holds the GIL the whole time."""
        count = 0
        for n in range(2, below):
            i = 2
            while i * i <= n:
                if n % i == 0:
                    break
                i += 1
            else:
                count += 1
        return count


async def run_tasks(pool: WorkerPool, tasks: int, below: int) -> tuple[float, list[int]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(pool.acall.count_primes(below) for _ in range(tasks)))
    return time.perf_counter() - started, results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8, help="calls per measurement")
    parser.add_argument("--n", type=int, default=60_000, help="count primes below this (per call)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    options = parser.parse_args()
    local = time.perf_counter()
    expected = PrimeWorker.count_primes(None, options.n)
    local = time.perf_counter() - local
    pools = {n: WorkerPool.spawn(__file__, workers=n, heartbeat_interval=0) for n in (1, 2)}
    times: dict[int, list[float]] = {1: [], 2: []}
    for pool in pools.values():
        await pool.astart()
    try:
        for _ in range(options.reps):
            for n, pool in pools.items():  # interleaved, so both see the same machine load
                seconds, results = await run_tasks(pool, options.tasks, options.n)
                assert results == [expected] * options.tasks
                times[n].append(seconds)
    finally:
        for pool in pools.values():
            await pool.aclose()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"{options.tasks} calls of count_primes({options.n}) (one call in this process: {local * 1000:.0f} ms), "
          f"median of {options.reps} interleaved runs:")
    print(f"  WorkerPool(workers=1): {one:.2f} s")
    print(f"  WorkerPool(workers=2): {two:.2f} s")
    print(f"  speed-up N=2 vs N=1: {one / two:.2f}x (ideal 2.00x on 2 free cores)")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        PrimeWorker().run()
    else:
        asyncio.run(main())
