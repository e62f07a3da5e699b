"""Multi-host benchmark: what CURVE costs a tcp round trip, and a pool across two hosts.

    python bench/remote.py [--calls N] [--reps R] [--pool-calls M] [--skip-pool]

1. CURVE: two services on loopback, one plain and one with CURVE; sync round trip (p50,
   p99) and async throughput (256 calls in flight), interleaved over R repetitions; the
   ratios are CURVE against plain measured in the same run.
2. Pool (root only): network namespaces A, B, C (tests/netns.py) with Redis in the hub; a
   service in A, later one in C, and a ``WorkerPool.connect`` in B doing CPU-bound calls;
   throughput over two instances against one, in the same run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

from bench.rpc import mf_async_throughput, mf_sync_latency, pct  # noqa: E402
from multifrost import ParentWorker  # noqa: E402
from multifrost.transports import curve_keys  # noqa: E402

SERVICE = os.path.join(HERE, "_remote_service.py")
CLIENT = os.path.join(HERE, "_remote_client.py")


def _wait_registered(registry: str, service_id: str) -> None:
    from multifrost.registries import live_instances, open_registry
    reg = open_registry(registry)
    deadline = time.monotonic() + 20
    while not live_instances(reg, service_id):
        if time.monotonic() > deadline:
            raise SystemExit(f"service {service_id} did not register")
        time.sleep(0.05)


async def _throughput(service_id: str, registry: str, calls: int, curve: dict) -> float:
    async with ParentWorker.connect(service_id, registry=registry, heartbeat_interval=0, **curve) as worker:
        await mf_async_throughput(worker, 200)
        return await mf_async_throughput(worker, calls)


def curve_cost(calls: int, reps: int) -> dict:
    """p50/p99 round trip and throughput, plain against CURVE, on loopback tcp."""
    with tempfile.TemporaryDirectory() as tmp:
        registry = os.path.join(tmp, "services.json")
        _, secret = curve_keys().write_keypair(os.path.join(tmp, "server"))
        options = {"plain": {}, "curve": {"curve_server_key": os.path.join(tmp, "server.key")}}
        procs = [subprocess.Popen([sys.executable, SERVICE, "plain", registry, "127.0.0.1"]),
                 subprocess.Popen([sys.executable, SERVICE, "curve", registry, "127.0.0.1", secret])]
        try:
            for name in options:
                _wait_registered(registry, name)
            workers = {name: ParentWorker.connect(name, registry=registry, heartbeat_interval=0, **opts).start()
                       for name, opts in options.items()}
            samples = {name: {"p50": [], "p99": [], "tput": []} for name in options}
            for _ in range(reps):
                for name, worker in workers.items():
                    mf_sync_latency(worker, 100)
                    lat = mf_sync_latency(worker, calls)
                    samples[name]["p50"].append(pct(lat, .5))
                    samples[name]["p99"].append(pct(lat, .99))
                    samples[name]["tput"].append(asyncio.run(_throughput(name, registry, calls, options[name])))
            for worker in workers.values():
                worker.close()
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


def pool_across_hosts(calls: int, iterations: int) -> tuple[float, float]:
    """(calls/s over one instance, calls/s over two), CPU-bound calls from namespace B."""
    import netns
    import redis_server
    hosts = netns.Hosts(("a", "b", "c"))
    redis = redis_server.RedisServer(host=hosts.hub_address, netns=hosts.hub)
    services = []
    try:
        redis.start()

        def rate(instances: int) -> float:
            out = subprocess.run(hosts.argv("b", [sys.executable, CLIENT, redis.url, str(instances), str(calls),
                                                  str(iterations)]), capture_output=True, text=True, check=True)
            return float(out.stdout.strip())

        with tempfile.TemporaryDirectory() as tmp:
            _, secret = curve_keys().write_keypair(os.path.join(tmp, "server"))
            services.append(hosts.run("a", [sys.executable, SERVICE, "spin", redis.url, "0.0.0.0", secret]))
            one = rate(1)
            services.append(hosts.run("c", [sys.executable, SERVICE, "spin", redis.url, "0.0.0.0", secret]))
            two = rate(2)
        return one, two
    finally:
        for proc in services:
            proc.terminate()
            proc.wait()
        redis.remove()
        hosts.remove()


_SPIN = "import sys\nn = int(sys.argv[2])\nfor _ in range(int(sys.argv[1])):\n    sum(i * i for i in range(n))"


def cpu_ceiling(calls: int, iterations: int) -> float:
    """What this machine allows right now: spin throughput of 2 bare processes against 1."""
    def rate(processes: int) -> float:
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN, str(calls // processes), str(iterations)])
                 for _ in range(processes)]
        for proc in procs:
            proc.wait()
        return calls / (time.perf_counter() - started)
    return rate(2) / rate(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/remote.py", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pool-calls", type=int, default=200)
    parser.add_argument("--spin", type=int, default=200_000, help="iterations of each CPU-bound call")
    parser.add_argument("--skip-pool", action="store_true")
    args = parser.parse_args()
    cost = curve_cost(args.calls, args.reps)
    plain, curve = cost["plain"], cost["curve"]
    print(f"tcp round trip, sync, {args.calls} calls x {args.reps} reps (medians):")
    print("| path | p50 µs | p99 µs | async calls/s (256 in flight) |\n|---|---|---|---|")
    for name, row in cost.items():
        print(f"| {name} | {row['p50'] * 1e6:.1f} | {row['p99'] * 1e6:.1f} | {row['tput']:.0f} |")
    print(f"CURVE: p50 {(curve['p50'] - plain['p50']) * 1e6:+.1f} µs, "
          f"throughput {curve['tput'] / plain['tput']:.2f}x plain (targets: <= +20 µs, >= 0.5x)")
    if args.skip_pool:
        return
    import netns
    if not netns.available():
        print(f"pool across hosts: skipped ({netns.ENABLE_HINT})")
        return
    one, two = pool_across_hosts(args.pool_calls, args.spin)
    ceiling = cpu_ceiling(args.pool_calls, args.spin)
    print(f"pool across 2 namespaces, CPU-bound spin({args.spin}) x {args.pool_calls}: "
          f"1 instance {one:.1f} calls/s, 2 instances {two:.1f} calls/s = {two / one:.2f}x (target >= 1.7x); "
          f"2 bare processes against 1 on this machine right now: {ceiling:.2f}x")


if __name__ == "__main__":
    main()
