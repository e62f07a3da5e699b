"""The pool side of the multi-host benchmark, run in a network namespace: wait until the pool
holds INSTANCES members, then time CALLS ``spin(ITERATIONS)`` calls spread with ``pool.map``.

    python bench/_remote_client.py REGISTRY INSTANCES CALLS ITERATIONS  -> prints calls/s
"""
import sys
import time

from multifrost import WorkerPool

registry, instances, calls, iterations = sys.argv[1], *map(int, sys.argv[2:5])
with WorkerPool.connect("spin", registry=registry, timeout=20, poll_interval=0.1) as pool:
    deadline = time.monotonic() + 20
    while len(pool) < instances:
        if time.monotonic() > deadline:
            sys.exit(f"the pool holds {len(pool)} instance(s), expected {instances}")
        time.sleep(0.05)
    pool.map("spin", [(iterations,)] * (2 * instances))  # warm up every member
    started = time.perf_counter()
    pool.map("spin", [(iterations,)] * calls)
    print(calls / (time.perf_counter() - started))
