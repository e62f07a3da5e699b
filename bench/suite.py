"""The side-by-side comparison of ``python -m bench``: one sync ``add(1, 2)`` round trip per call,
per transport, for multifrost, raw pyzmq (the ZeroMQ floor), ``ProcessPoolExecutor`` and
``multiprocessing.Pipe``, all measured interleaved in the same run; plus what metrics cost.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import msgpack
import zmq

from bench._add_worker import AddWorker
from bench.rpc import _add, pct, raw_sync_latency
from multifrost import ParentWorker
from multifrost.metrics import Metrics, NullMetrics
from multifrost.transports.zeromq import _shared_context

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSPORTS = ("tcp", "ipc", "inproc", "memory")
RAW_FOR = {"tcp": "tcp", "ipc": "ipc", "inproc": "inproc", "memory": "inproc"}
POOL, PIPE = "ProcessPoolExecutor(1).submit", "multiprocessing.Pipe"
OFF = "multifrost sync, metrics off"


# -- the raw pyzmq floor -----------------------------------------------------------------------

class RawProcess:
    """A bound DEALER and bench/_raw_child.py (a blocking ROUTER loop) connected over tcp or ipc."""

    def __init__(self, endpoint: str) -> None:
        self.sock = _shared_context().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        bound = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        env = {**os.environ, "MULTIFROST_ENDPOINT": bound}
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_raw_child.py")], env=env)

    def latency(self, calls: int) -> list[float]:
        return raw_sync_latency(self.sock, calls)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.sock.close(0)


class RawThread:
    """The same blocking ROUTER loop in a thread of this process, over inproc."""

    def __init__(self) -> None:
        ctx = _shared_context()
        endpoint = f"inproc://bench-{uuid.uuid4().hex}"
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(endpoint)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.connect(endpoint)
        self.thread = threading.Thread(target=self._serve, name="bench-raw-inproc")
        self.thread.start()

    def _serve(self) -> None:
        while True:
            peer, empty, payload = self.router.recv_multipart()
            message = msgpack.unpackb(payload)
            if message["type"] == "shutdown":
                return
            a, b = message["args"]
            reply = {"app": message["app"], "id": message["id"], "type": "response", "timestamp": time.time(),
                     "result": a + b}
            self.router.send_multipart([peer, empty, msgpack.packb(reply)])

    def latency(self, calls: int) -> list[float]:
        return raw_sync_latency(self.sock, calls)

    def close(self) -> None:
        self.sock.send_multipart([b"", msgpack.packb({"type": "shutdown"})])
        self.thread.join()
        self.sock.close(0)
        self.router.close(0)


# -- what Python users reach for ---------------------------------------------------------------

def _pipe_child(conn) -> None:
    """multiprocessing.Pipe peer: answer (a, b) with a + b until None."""
    while True:
        message = conn.recv()
        if message is None:
            return
        conn.send(message[0] + message[1])


class PipePeer:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=_pipe_child, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def latency(self, calls: int) -> list[float]:
        out = []
        conn = self.conn
        for _ in range(calls):
            t0 = time.perf_counter()
            conn.send((1, 2))
            assert conn.recv() == 3
            out.append(time.perf_counter() - t0)
        return out

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(5)
        self.conn.close()


class PoolPeer:
    def __init__(self) -> None:
        self.pool = ProcessPoolExecutor(1)

    def latency(self, calls: int) -> list[float]:
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            assert self.pool.submit(_add, 1, 2).result() == 3
            out.append(time.perf_counter() - t0)
        return out

    def close(self) -> None:
        self.pool.shutdown()


# -- multifrost ----------------------------------------------------------------------------------

class MultifrostPeer:
    """A started sync ParentWorker: spawned for tcp/ipc, served in this process for inproc/memory."""

    def __init__(self, transport: str) -> None:
        if transport in ("tcp", "ipc"):
            worker = ParentWorker.spawn(os.path.join(HERE, "_add_worker.py"), transport=transport,
                                        heartbeat_interval=0)
        else:
            worker = ParentWorker.inprocess(AddWorker(), transport=transport)
        self.worker = worker.start()
        self.metrics = self.worker.metrics

    def latency(self, calls: int, metrics: bool = True) -> list[float]:
        self.worker.metrics = self.metrics if metrics else NullMetrics()
        add = self.worker.call.add
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            add(1, 2)
            out.append(time.perf_counter() - t0)
        self.worker.metrics = self.metrics
        return out

    def close(self) -> None:
        self.worker.close()


# -- the run ---------------------------------------------------------------------------------------

def metrics_overhead_ns(pairs: int = 200_000) -> float:
    """Nanoseconds one call_started + call_finished pair costs, Metrics minus NullMetrics."""
    def loop(metrics) -> float:
        started, finished = metrics.call_started, metrics.call_finished
        t0 = time.perf_counter()
        for _ in range(pairs):
            started()
            finished(0.0001, "ok")
        return time.perf_counter() - t0
    on = statistics.median(loop(Metrics()) for _ in range(5))
    off = statistics.median(loop(NullMetrics()) for _ in range(5))
    return (on - off) / pairs * 1e9


def paired(peer: MultifrostPeer, calls: int, blocks: int = 10) -> tuple[list[float], list[float]]:
    """Metrics on and off on the same worker, in alternating blocks (ABBA order), so that
    drift of the machine hits both alike: ``calls`` samples of each."""
    on: list[float] = []
    off: list[float] = []
    size = max(1, calls // blocks)
    for block in range(blocks):
        for metrics in ((True, False) if block % 2 == 0 else (False, True)):
            (on if metrics else off).extend(peer.latency(size, metrics))
    return on, off


def compare(calls: int = 2000, reps: int = 5, progress: Callable[[str], None] | None = None) -> dict:
    """Latencies of every path, ``reps`` interleaved repetitions of ``calls`` sequential calls.

    Returns the median p50/p99 per path (seconds), every sample (for the chart) and the
    metrics overhead. The metrics-off row uses the same tcp worker, its metrics swapped for
    NullMetrics, measured in blocks alternating with the metrics-on ones (``paired``).
    """
    tmpdir = tempfile.mkdtemp(prefix="mfbench")
    peers: dict[tuple[str, str], object] = {}
    try:
        if progress:
            progress("starting workers and baselines")
        for transport in TRANSPORTS:
            peers[(transport, "multifrost sync")] = MultifrostPeer(transport)
        peers[("tcp", "raw pyzmq")] = RawProcess("tcp://127.0.0.1:*")
        peers[("ipc", "raw pyzmq")] = RawProcess(f"ipc://{tmpdir}/raw.sock")
        peers[("inproc", "raw pyzmq")] = RawThread()
        peers[("process", POOL)] = PoolPeer()
        peers[("process", PIPE)] = PipePeer()
        for peer in peers.values():
            peer.latency(200)  # warm up
        samples: dict[tuple[str, str], list[list[float]]] = {}
        plan = list(peers.items())
        tcp_peer = peers[("tcp", "multifrost sync")]
        for rep in range(reps):
            for number, (key, peer) in enumerate(plan, 1):
                if progress:
                    progress(f"repetition {rep + 1}/{reps}, path {number}/{len(plan)}")
                if peer is tcp_peer:
                    on, off = paired(tcp_peer, calls)
                    samples.setdefault(key, []).append(on)
                    samples.setdefault(("tcp", OFF), []).append(off)
                else:
                    samples.setdefault(key, []).append(peer.latency(calls))
        overhead_ns = metrics_overhead_ns()
    finally:
        for peer in peers.values():
            peer.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    rows = {key: {"p50": statistics.median(pct(run, 0.5) for run in runs),
                  "p99": statistics.median(pct(run, 0.99) for run in runs)}
            for key, runs in samples.items()}
    flat = {key: [value for run in runs for value in run] for key, runs in samples.items()}
    return {"calls": calls, "reps": reps, "rows": rows, "samples": flat, "metrics_overhead_ns": overhead_ns}


def report(result: dict) -> list[str]:
    """The comparison table and the metrics cost, as Markdown lines."""
    rows = result["rows"]
    pool, pipe = rows[("process", POOL)]["p50"], rows[("process", PIPE)]["p50"]
    lines = [f"sync `add(1, 2)` round trip, {result['calls']} calls x {result['reps']} interleaved reps; "
             "ratios are p50 / p50 of the other path in the same run (lower is faster; 1.00x = as fast)",
             "",
             "| transport | path | p50 µs | p99 µs | vs raw pyzmq | vs ProcessPoolExecutor | vs multiprocessing.Pipe |",
             "|---|---|---|---|---|---|---|"]
    order = [(t, p) for t in TRANSPORTS for p in ("multifrost sync", OFF, "raw pyzmq")]
    order += [("process", POOL), ("process", PIPE)]
    for key in order:
        if key not in rows:
            continue
        transport, path = key
        row = rows[key]
        raw = rows.get((RAW_FOR.get(transport, ""), "raw pyzmq"))
        vs_raw = f"{row['p50'] / raw['p50']:.2f}x" if raw and transport in RAW_FOR else "-"
        if transport == "memory":
            vs_raw += " (raw inproc)"
        lines.append(f"| {transport} | {path} | {row['p50'] * 1e6:.0f} | {row['p99'] * 1e6:.0f} | {vs_raw} | "
                     f"{row['p50'] / pool:.2f}x | {row['p50'] / pipe:.2f}x |")
    on, off = rows[("tcp", "multifrost sync")]["p50"], rows[("tcp", OFF)]["p50"]
    overhead = result["metrics_overhead_ns"]
    lines += ["",
              f"metrics cost: one call_started + call_finished pair costs {overhead:.0f} ns more than NullMetrics "
              f"= {overhead / 1e3 / (on * 1e6) * 100:.2f} % of the tcp sync p50 and "
              f"{overhead / 1e3 / (rows[('memory', 'multifrost sync')]['p50'] * 1e6) * 100:.2f} % of the memory "
              f"sync p50 (target < 3 %); end to end, tcp sync p50 with metrics on / off: "
              f"{on * 1e6:.1f} / {off * 1e6:.1f} µs = {on / off:.3f}x (alternating blocks on the same worker)"]
    return lines


def chart(result: dict, path: str) -> bool:
    """Latency distributions per transport (ECDFs) as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = result["samples"]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    references = [(("process", POOL), "gray", "--"), (("process", PIPE), "silver", ":")]
    for axis, transport in zip(axes.flat, TRANSPORTS):
        lines = [((transport, "multifrost sync"), "tab:blue", "-"), ((transport, OFF), "tab:cyan", "-."),
                 ((RAW_FOR[transport], "raw pyzmq"), "tab:orange", "-")] + references
        for key, color, style in lines:
            if key not in samples:
                continue
            values = sorted(v * 1e6 for v in samples[key])
            heights = [(i + 1) / len(values) for i in range(len(values))]
            label = f"{key[1]} ({key[0]})" if key[0] != transport else key[1]
            axis.plot(values, heights, color=color, linestyle=style, label=label)
        axis.set_title(f"{transport}" + (" (in-process)" if transport in ("inproc", "memory") else " (spawned child)"))
        axis.set_xscale("log")
        axis.set_ylim(0, 1.0)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    for axis in axes[1]:
        axis.set_xlabel("round trip of one sync call, µs (log scale)")
    for axis in axes[:, 0]:
        axis.set_ylabel("fraction of calls at or below")
    figure.suptitle(f"add(1, 2) latency distributions, {result['calls']} calls x {result['reps']} reps per path")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
