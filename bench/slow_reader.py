"""A client that never reads: what it costs a service and its other clients (not a test).

A connect-mode service serves a legitimate client while a raw DEALER sends calls asking for
10 kB results and never reads. Reports the service's held bytes and dropped replies, its CPU
use while stuck, and the legitimate client's call latency (p50/p99) before and during.

    python bench/slow_reader.py [--flood 3000] [--calls 2000] [--budget BYTES]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from multifrost import ParentWorker, protocol  # noqa: E402
from multifrost.codec import pack_message  # noqa: E402
from multifrost.registry import FileRegistry  # noqa: E402

SERVICE = os.path.join(ROOT, "tests", "workers", "math_service.py")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latencies(client, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        client.call.add(1, 2)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=1 << 20, help="the service's max_held_bytes")
    args = parser.parse_args()
    registry = os.path.join(tempfile.mkdtemp(), "services.json")
    env = {**os.environ, "MULTIFROST_REGISTRY": registry, "TEST_MAX_HELD_BYTES": str(args.budget), "PYTHONPATH": ROOT + os.pathsep + os.path.join(ROOT, "tests", "workers")}
    service = subprocess.Popen([sys.executable, SERVICE, "bench-slow"], env=env, stderr=subprocess.DEVNULL)
    os.environ["MULTIFROST_REGISTRY"] = registry
    ctx = zmq.Context()
    flooder = ctx.socket(zmq.DEALER)
    flooder.setsockopt(zmq.LINGER, 0)
    try:
        port = FileRegistry(registry).discover("bench-slow", timeout=30).port
        with ParentWorker.connect("bench-slow", timeout=30, default_timeout=30.0) as client:
            p50, p99 = latencies(client, args.calls)
            print(f"before: add() p50 {p50:.3f} ms, p99 {p99:.3f} ms")
            flooder.connect(f"tcp://127.0.0.1:{port}")
            for _ in range(args.flood):
                flooder.send_multipart([b"", pack_message(protocol.call("make_bytes", [10_000]))])
            while not client.call.backlog()[1]:
                time.sleep(0.05)
            before = cpu_seconds(service.pid)
            started = time.monotonic()
            p50, p99 = latencies(client, args.calls)
            busy = cpu_seconds(service.pid) - before
            idle_from = cpu_seconds(service.pid)
            time.sleep(2.0)
            idle = cpu_seconds(service.pid) - idle_from
            held, dropped = client.call.backlog()
            print(f"during: add() p50 {p50:.3f} ms, p99 {p99:.3f} ms "
                  f"(service CPU {busy / (time.monotonic() - started - 2.0) * 100:.0f} % of a core while answering)")
            print(f"stuck and otherwise idle: service CPU {idle / 2.0 * 100:.1f} % of a core; "
                  f"held {held} bytes for the non-reader, dropped {dropped} replies")
    finally:
        flooder.close(0)
        ctx.term()
        service.terminate()
        service.wait(30)


if __name__ == "__main__":
    main()
