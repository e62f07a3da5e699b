"""Streams, cancellation and extension costs (issue 15), measured in one run.

    python bench/streams.py [--items N] [--reps R] [--cancels C]

Rows are medians over R repetitions. Streaming throughput is compared with the same number of
sequential calls in the same run (target: small items >= 5x); first-item latency with a call's
p50; cancellation latency is task.cancel() -> the worker's CancelledError, and early-exit
latency stream close -> the generator's ``finally``, both read on this host's monotonic clock
(targets: cancellation p99 <= 10 ms, early exit <= 50 ms). The last table is the per-call cost
of the extensions and of tracing, against calls with both off, on the same worker.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE), os.environ.get("PYTHONPATH")) if p)

from multifrost import ParentWorker, tracing  # noqa: E402

WORKER = os.path.join(HERE, "_stream_worker.py")
BLOB = 64 * 1024


def worker(transport: str) -> ParentWorker:
    if transport == "memory":
        sys.path.insert(0, HERE)
        from _stream_worker import StreamBenchWorker
        return ParentWorker.inprocess(StreamBenchWorker(), default_timeout=30)
    return ParentWorker.spawn(WORKER, transport=transport, default_timeout=30, heartbeat_interval=0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(w: ParentWorker, items: int, reps: int) -> dict:
    small_stream, small_calls, big_stream, big_calls = [], [], [], []
    big = max(1, items // 20)
    for _ in range(reps):
        t = time.perf_counter()
        n = 0
        async for _ in w.astream.ints(items):
            n += 1
        small_stream.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(items // 4):
            await w.acall.add(1, 2)
        small_calls.append((items // 4) / (time.perf_counter() - t))
        t = time.perf_counter()
        async for _ in w.astream.blobs(big, BLOB):
            pass
        big_stream.append(big / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(big):
            await w.acall.blob(BLOB)
        big_calls.append(big / (time.perf_counter() - t))
    return {"small_stream": statistics.median(small_stream), "small_calls": statistics.median(small_calls),
            "big_stream": statistics.median(big_stream), "big_calls": statistics.median(big_calls)}


async def first_item(w: ParentWorker, samples: int) -> dict:
    firsts, calls = [], []
    for _ in range(samples):
        t = time.perf_counter()
        async with w.astream.ints(10) as stream:
            await stream.__anext__()
            firsts.append(time.perf_counter() - t)
        t = time.perf_counter()
        await w.acall.add(1, 2)
        calls.append(time.perf_counter() - t)
    return {"first_item_p50_us": pct(firsts, 0.5) * 1e6, "call_p50_us": pct(calls, 0.5) * 1e6}


async def cancellation(w: ParentWorker, count: int) -> dict:
    delays, exits = [], []
    for _ in range(count):
        key = uuid.uuid4().hex
        task = asyncio.ensure_future(w.acall.sleeper(key))
        while not await w.acall.mark(key):
            await asyncio.sleep(0.001)
        cancelled = time.monotonic()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        while "cancelled" not in (mark := await w.acall.mark(key)):
            await asyncio.sleep(0.0005)
        delays.append(mark["cancelled"] - cancelled)
        key = uuid.uuid4().hex
        async with w.astream.endless(key, window=8) as stream:
            await stream.__anext__()
        closed = time.monotonic()
        while not (mark := await w.acall.mark(key)):
            await asyncio.sleep(0.0005)
        exits.append(mark["closed"] - closed)
    return {"cancel_p50_ms": pct(delays, 0.5) * 1e3, "cancel_p99_ms": pct(delays, 0.99) * 1e3,
            "exit_p50_ms": pct(exits, 0.5) * 1e3, "exit_p99_ms": pct(exits, 0.99) * 1e3}


async def extension_cost(w: ParentWorker, calls: int, reps: int) -> dict:
    """Call p50 with the extensions off (as with a v4 worker) / on, tracing off / on, interleaved."""
    agreed = w._channel.extensions
    had_tracing = tracing.ENABLED
    modes = {"v4 path, no tracing": ({}, False), "extensions, no tracing": (agreed, False)}
    if had_tracing:
        modes[f"extensions + tracing ({'provider set' if tracing.recording() else 'no provider set'})"] = (agreed, True)
    samples = {name: [] for name in modes}
    try:
        for _ in range(reps):
            for name, (extensions, traced) in modes.items():
                w._channel.extensions, tracing.ENABLED = extensions, traced
                times = []
                for _ in range(calls):
                    t = time.perf_counter()
                    await w.acall.add(1, 2)
                    times.append(time.perf_counter() - t)
                samples[name].append(pct(times, 0.5))
    finally:
        w._channel.extensions, tracing.ENABLED = agreed, had_tracing
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


def prepare_cost(w: ParentWorker, n: int = 20000) -> dict:
    """Parent CPU per call spent building the CALL (``_prepare``), by path, in µs: isolates what
    the hooks add from the round trip's noise."""
    agreed = w._channel.extensions
    had_tracing = tracing.ENABLED
    modes = {"v4 path, no tracing": ({}, False), "extensions, no tracing": (agreed, False)}
    out = {}
    try:
        for name, (extensions, traced) in modes.items():
            w._channel.extensions, tracing.ENABLED = extensions, traced
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(n):
                    w._prepare("add", (1, 2), 5.0, None)
                best = min(best, (time.perf_counter() - t) / n)
            out[name] = best * 1e6
        if had_tracing:
            w._channel.extensions, tracing.ENABLED = agreed, True
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(n):
                    if tracing.recording():
                        with tracing.client_call("add"):
                            w._prepare("add", (1, 2), 5.0, None)
                    else:
                        w._prepare("add", (1, 2), 5.0, None)
                best = min(best, (time.perf_counter() - t) / n)
            out[f"extensions + tracing ({'provider set' if tracing.recording() else 'no provider set'})"] = best * 1e6
    finally:
        w._channel.extensions, tracing.ENABLED = agreed, had_tracing
    return out


async def bench(transport: str, args) -> None:
    async with worker(transport) as w:
        await w.acall.add(1, 2)
        t = await throughput(w, args.items, args.reps)
        f = await first_item(w, 200)
        c = await cancellation(w, args.cancels)
        cost = await extension_cost(w, 500, args.reps) if transport == "tcp" else {}
        build = prepare_cost(w) if transport == "tcp" else {}
    print(f"\n## {transport}\n")
    print("| measure | stream | sequential calls | ratio |\n|---|---|---|---|")
    print(f"| small items (ints), items/s | {t['small_stream']:,.0f} | {t['small_calls']:,.0f} | "
          f"{t['small_stream'] / t['small_calls']:.1f}x |")
    print(f"| 64 KiB items, items/s | {t['big_stream']:,.0f} | {t['big_calls']:,.0f} | "
          f"{t['big_stream'] / t['big_calls']:.1f}x |")
    print(f"| first item vs call, p50 µs | {f['first_item_p50_us']:.0f} | {f['call_p50_us']:.0f} | "
          f"{f['first_item_p50_us'] / f['call_p50_us']:.2f}x |")
    print(f"\ncancellation task.cancel() -> worker CancelledError: p50 {c['cancel_p50_ms']:.2f} ms, "
          f"p99 {c['cancel_p99_ms']:.2f} ms ({args.cancels} calls)")
    print(f"early exit close -> generator finally: p50 {c['exit_p50_ms']:.2f} ms, p99 {c['exit_p99_ms']:.2f} ms")
    if cost:
        base = cost["v4 path, no tracing"]
        print("\n| call path (tcp, async) | p50 µs | vs v4 path |\n|---|---|---|")
        for name, value in cost.items():
            print(f"| {name} | {value:.1f} | {100 * (value / base - 1):+.1f} % |")
        print("\n| building a CALL (parent CPU) | µs | added, % of the v4 call p50 |\n|---|---|---|")
        for name, value in build.items():
            added = value - build["v4 path, no tracing"]
            print(f"| {name} | {value:.2f} | {100 * added / base:+.2f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cancels", type=int, default=200)
    parser.add_argument("--transports", default="tcp,ipc,memory")
    parser.add_argument("--otel-sdk", action="store_true",
                        help="configure an OpenTelemetry SDK tracer provider (spans recorded, not exported)")
    args = parser.parse_args()
    if args.otel_sdk:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())
    print(f"# bench/streams.py (opentelemetry installed: {tracing.ENABLED})")
    for transport in args.transports.split(","):
        asyncio.run(bench(transport, args))


if __name__ == "__main__":
    main()
