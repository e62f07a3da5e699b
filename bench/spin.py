"""What a wake-up costs: bare round trips over a socket pair between two processes, by how each side waits.

    python bench/spin.py [--rounds 20000] [--same-cpu]

Each side sends a small frame and waits for the other's: sleeping in ``poll`` then ``recv``
(as multifrost did), sleeping in a blocking ``recv`` (as ``multiprocessing.Pipe`` does), or
spinning on ``poll(0)`` for up to ``multifrost.spin.SPIN`` before sleeping (``spin.Spinner``).
The two processes are pinned to CPUs 0 and 1, so that the difference is the wake-up of a CPU
that went idle, which no Python code can shorten; ``--same-cpu`` pins both to CPU 0, where
spinning can only hold the peer off (a Spinner whose process may use one CPU never spins; this
one is made before the pinning, to show what its back-off does when the scheduler puts both
processes on one CPU).
"""
from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from multifrost.spin import Spinner  # noqa: E402

MODES = ("poll", "block", "spin")


def _waiter(mode: str, sock: socket.socket):
    """A function that returns once ``sock`` is readable (None: a blocking recv waits itself)."""
    sock.setblocking(mode == "block")
    if mode == "block":
        return None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    if mode == "poll":
        return poller.poll
    spinner = Spinner()
    return lambda: spinner.poll(poller.poll, None)


def round_trips(mode: str, rounds: int, same_cpu: bool) -> float:
    """p50 µs of a round trip with both sides waiting by ``mode``."""
    cpus = os.sched_getaffinity(0)
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        wait, room = _waiter(mode, theirs), bytearray(256)  # before pinning: a Spinner pinned to one CPU never spins
        os.sched_setaffinity(0, {0 if same_cpu else 1})
        while True:
            if wait:
                wait()
            if not theirs.recv_into(room):
                os._exit(0)
            theirs.send(b"r" * 40)
    theirs.close()
    wait, room = _waiter(mode, ours), bytearray(256)
    os.sched_setaffinity(0, {0})
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        ours.send(b"c" * 80)
        if wait:
            wait()
        ours.recv_into(room)
        times.append(time.perf_counter() - start)
    ours.close()
    os.waitpid(pid, 0)
    os.sched_setaffinity(0, cpus)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--same-cpu", action="store_true")
    opts = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2 and not opts.same_cpu:
        sys.exit("needs two CPUs (or --same-cpu)")
    for mode in MODES:
        print(f"{mode:>5}: round trip p50 {round_trips(mode, opts.rounds, opts.same_cpu):6.1f} µs")


if __name__ == "__main__":
    main()
