"""Spawn -> first result (issue 14): a raw pyzmq child against multifrost workers (sync and
async API) over unix and tcp, started in rotation; medians, and each one's distance to raw in
the same run.

``python -m bench.spawn [--rounds N] [--compile]``. ``--compile`` byte-compiles multifrost
first, as installing it does: with PYTHONDONTWRITEBYTECODE set and no ``__pycache__`` (a
source checkout), every child compiles multifrost's modules from source, which costs a
spawn about 40 ms on the 2-core machine and says nothing about an installed package.
"""
from __future__ import annotations

import argparse
import json
import statistics

from bench.libraries import MultifrostAsync, MultifrostSync, Raw, compile_multifrost


def measure(rounds: int) -> dict[str, list[float]]:
    """Seconds from start to first result of each subject, ``rounds`` times in rotation (a fresh
    subject each time: an async one closes its event loop with its worker)."""
    makers = [Raw, lambda: MultifrostSync("unix"), lambda: MultifrostAsync("unix"),
              lambda: MultifrostSync("tcp"), lambda: MultifrostAsync("tcp")]
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for make in makers:
            subject = make()
            times.setdefault(subject.name, []).append(subject.start())
            subject.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="byte-compile multifrost first")
    parser.add_argument("--json", action="store_true", help="print the samples as JSON")
    args = parser.parse_args()
    if args.compile:
        compile_multifrost()
    times = measure(args.rounds)
    if args.json:
        print(json.dumps(times))
        return
    raw = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26s} median {median * 1000:6.1f} ms  min {min(values) * 1000:6.1f} ms  "
              f"raw {(median - raw) * 1000:+6.1f} ms  {median / raw:.2f}x")


if __name__ == "__main__":
    main()
