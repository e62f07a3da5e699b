"""RPC benchmark: multifrost against raw pyzmq and ProcessPoolExecutor, measured in one run.

    python bench/rpc.py [--calls N] [--reps R]

Every row is a median over R interleaved repetitions; ratios are against the raw *blocking*
pyzmq DEALER/ROUTER round trip measured in the same run (the floor), so they survive a noisy
machine better than the absolute microseconds.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import msgpack
import zmq
import zmq.asyncio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from multifrost import ParentWorker  # noqa: E402
from multifrost.codec import IMPLEMENTATION  # noqa: E402

WINDOW = 256


def _call_payload() -> tuple[str, bytes]:
    msg_id = os.urandom(16).hex()
    return msg_id, msgpack.packb({"app": "comlink_ipc_v4", "id": msg_id, "type": "call", "timestamp": time.time(),
                                  "function": "add", "args": [1, 2], "namespace": "default"})


class RawPeer:
    """A bound DEALER and the blocking raw child connected to it."""

    def __init__(self, ctx: zmq.Context, asyncio_ctx: bool = False) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_raw_child.py")],
                                     env={**os.environ, "COMLINK_ZMQ_PORT": str(port)})

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.sock.close(0)


def raw_sync_latency(sock: zmq.Socket, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        _, payload = _call_payload()
        t0 = time.perf_counter()
        sock.send_multipart([b"", payload])
        reply = msgpack.unpackb(sock.recv_multipart()[1])
        out.append(time.perf_counter() - t0)
        assert reply["result"] == 3
    return out


def raw_sync_throughput(sock: zmq.Socket, calls: int) -> float:
    t0 = time.perf_counter()
    sent = received = 0
    while received < calls:
        while sent < calls and sent - received < WINDOW:
            sock.send_multipart([b"", _call_payload()[1]])
            sent += 1
        msgpack.unpackb(sock.recv_multipart()[1])
        received += 1
    return calls / (time.perf_counter() - t0)


async def raw_asyncio_latency(sock, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        _, payload = _call_payload()
        t0 = time.perf_counter()
        await sock.send_multipart([b"", payload])
        msgpack.unpackb((await sock.recv_multipart())[1])
        out.append(time.perf_counter() - t0)
    return out


def mf_sync_latency(worker: ParentWorker, calls: int) -> list[float]:
    out = []
    add = worker.call.add
    for _ in range(calls):
        t0 = time.perf_counter()
        add(1, 2)
        out.append(time.perf_counter() - t0)
    return out


async def mf_async_latency(worker: ParentWorker, calls: int, function: str = "add") -> list[float]:
    out = []
    call = worker.acall_function
    for _ in range(calls):
        t0 = time.perf_counter()
        await call(function, (1, 2))
        out.append(time.perf_counter() - t0)
    return out


async def mf_async_throughput(worker: ParentWorker, calls: int, function: str = "add") -> float:
    sem = asyncio.Semaphore(WINDOW)
    call = worker.acall_function

    async def one():
        async with sem:
            await call(function, (1, 2))

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.perf_counter() - t0)


def _add(a, b):
    return a + b


def pool_latency(pool: ProcessPoolExecutor, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        pool.submit(_add, 1, 2).result()
        out.append(time.perf_counter() - t0)
    return out


def spawn_to_first_result() -> float:
    t0 = time.perf_counter()
    with ParentWorker.spawn(os.path.join(HERE, "_add_worker.py"), transport="tcp", heartbeat_interval=0) as worker:
        worker.call.add(1, 2)
        return time.perf_counter() - t0


def bare_import() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import multifrost"], check=True)
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(calls: int = 2000, reps: int = 7, progress: Callable[[str], None] | None = None) -> dict:
    """Run every path ``reps`` times, interleaved; returns the medians per path and the start-up times."""
    progress = progress or (lambda text: print(f"\r{text}", end="", file=sys.stderr, flush=True))
    ctx = zmq.Context()
    actx = zmq.asyncio.Context()
    raw = RawPeer(ctx)
    araw_sock = actx.socket(zmq.DEALER)
    araw_sock.setsockopt(zmq.LINGER, 0)
    aport = araw_sock.bind_to_random_port("tcp://127.0.0.1")
    araw_proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_raw_child.py")],
                                 env={**os.environ, "COMLINK_ZMQ_PORT": str(aport)})
    script = os.path.join(HERE, "_add_worker.py")
    sync_worker = ParentWorker.spawn(script, transport="tcp", heartbeat_interval=0).start()
    pool = ProcessPoolExecutor(1)
    pool.submit(_add, 1, 2).result()
    loop = asyncio.new_event_loop()
    async_worker = ParentWorker.spawn(script, transport="tcp", heartbeat_interval=0)
    loop.run_until_complete(async_worker.astart())

    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, **values: float) -> None:
        for key, value in values.items():
            rows.setdefault(name, {}).setdefault(key, []).append(value)

    # warm up every path
    raw_sync_latency(raw.sock, 200)
    loop.run_until_complete(raw_asyncio_latency(araw_sock, 200))
    mf_sync_latency(sync_worker, 200)
    loop.run_until_complete(mf_async_latency(async_worker, 200))
    try:
        for rep in range(reps):
            progress(f"repetition {rep + 1}/{reps} ...")
            lat = raw_sync_latency(raw.sock, calls)
            add("raw pyzmq, blocking", p50=pct(lat, .5), p99=pct(lat, .99), tput=raw_sync_throughput(raw.sock, calls * 2))
            lat = loop.run_until_complete(raw_asyncio_latency(araw_sock, calls))
            add("raw pyzmq, zmq.asyncio", p50=pct(lat, .5), p99=pct(lat, .99))
            lat = mf_sync_latency(sync_worker, calls)
            add("multifrost sync call", p50=pct(lat, .5), p99=pct(lat, .99))
            lat = loop.run_until_complete(mf_async_latency(async_worker, calls))
            tput = loop.run_until_complete(mf_async_throughput(async_worker, calls * 2))
            add("multifrost async call", p50=pct(lat, .5), p99=pct(lat, .99), tput=tput)
            lat = loop.run_until_complete(mf_async_latency(async_worker, calls, "aadd"))
            tput = loop.run_until_complete(mf_async_throughput(async_worker, calls * 2, "aadd"))
            add("multifrost async call, async def method", p50=pct(lat, .5), p99=pct(lat, .99), tput=tput)
            lat = pool_latency(pool, calls // 4)
            add("ProcessPoolExecutor(1).submit", p50=pct(lat, .5), p99=pct(lat, .99))
            if rep < 3:
                add("start-up", spawn=spawn_to_first_result(), bare=bare_import())
    finally:
        loop.run_until_complete(async_worker.aclose())
        loop.close()
        sync_worker.close()
        pool.shutdown()
        raw.close()
        araw_proc.kill()
        araw_proc.wait()
        araw_sock.close(0)
        ctx.term()
        actx.term()

    med = {name: {k: statistics.median(v) for k, v in vals.items()} for name, vals in rows.items()}
    return {"calls": calls, "reps": reps, "startup": med.pop("start-up"), "rows": med}


def report(result: dict) -> list[str]:
    """The Markdown lines of the RPC table for a ``measure()`` result."""
    med, calls, reps = result["rows"], result["calls"], result["reps"]
    floor = med["raw pyzmq, blocking"]
    lines = [f"# RPC benchmark: add(1, 2), {calls} calls x {reps} interleaved reps, codec={IMPLEMENTATION}, "
             f"Python {sys.version.split()[0]}, pyzmq {zmq.__version__}",
             "",
             "| path | p50 µs | p99 µs | p50 vs raw | calls/s (window 256) | vs raw |",
             "|---|---|---|---|---|---|"]
    for name, m in med.items():
        tput = m.get("tput")
        tput_cells = f"{tput:,.0f} | {tput / floor['tput']:.2f}x" if tput else "- | -"
        lines.append(f"| {name} | {m['p50'] * 1e6:.0f} | {m['p99'] * 1e6:.0f} | {m['p50'] / floor['p50']:.2f}x | "
                     f"{tput_cells} |")
    s = result["startup"]
    lines += ["", f"spawn to first result: {s['spawn'] * 1000:.0f} ms; bare `python -c 'import multifrost'`: "
                  f"{s['bare'] * 1000:.0f} ms; difference {(s['spawn'] - s['bare']) * 1000:.0f} ms (target: < 150 ms)"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per repetition (default 2000)")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions (default 7)")
    opts = parser.parse_args()
    try:
        result = measure(opts.calls, opts.reps)
    finally:
        print("", file=sys.stderr)
    print("\n".join(report(result)))


if __name__ == "__main__":
    main()
