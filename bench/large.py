"""Large payloads with and without multifrost.heap (malloc keeping freed memory), paired.

    python bench/large.py [--size-kib 1024] [--rounds 5] [--calls 40]

Each round runs, in fresh processes and in alternating order, an echo of ``size`` bytes over
``unix`` and ``tcp`` with the default (freed memory kept after the first large message) and
with ``MULTIFROST_KEEP_FREED_MEMORY=0`` in the parent and the child; prints MiB/s medians
and the ratio kept / not kept of each transport.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "_add_worker.py")


def _one(transport: str, size: int, calls: int) -> float:
    """(in a fresh process) MiB/s of ``calls`` echoes of ``size`` bytes, after 5 to warm up."""
    sys.path.insert(0, ROOT)
    from multifrost import ParentWorker
    payload = b"\xa5" * size
    with ParentWorker.spawn(WORKER, transport=transport) as worker:
        for _ in range(5):
            worker.call.echo(payload)
        t0 = time.perf_counter()
        for _ in range(calls):
            worker.call.echo(payload)
        return calls * size / (1 << 20) / (time.perf_counter() - t0)


def _run(transport: str, size: int, calls: int, keep: bool) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env["MULTIFROST_KEEP_FREED_MEMORY"] = "1" if keep else "0"
    code = f"import sys; sys.path.insert(0, {HERE!r}); import large; print(large._one({transport!r}, {size}, {calls}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=40)
    opts = parser.parse_args()
    size = opts.size_kib * 1024
    rates: dict[tuple[str, bool], list[float]] = {}
    for r in range(opts.rounds):
        for transport in ("unix", "tcp"):
            for keep in ((True, False) if r % 2 else (False, True)):
                rates.setdefault((transport, keep), []).append(_run(transport, size, opts.calls, keep))
    print(f"echo of {opts.size_kib} KiB, MiB/s, median of {opts.rounds} rounds")
    print("| transport | freed memory kept | not kept (MULTIFROST_KEEP_FREED_MEMORY=0) | ratio |")
    print("|---|---|---|---|")
    for transport in ("unix", "tcp"):
        kept = statistics.median(rates[(transport, True)])
        not_kept = statistics.median(rates[(transport, False)])
        print(f"| {transport} | {kept:,.0f} | {not_kept:,.0f} | {kept / not_kept:.2f}x |")


if __name__ == "__main__":
    main()
