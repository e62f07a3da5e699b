"""Transport benchmark: every backend through the interface beside raw pyzmq DEALER/ROUTER.

Setup, identical for the interface and the baseline: one process, the echo side (child end,
or a raw ROUTER) runs in a thread, the parent side in the main thread. Both sides of the
interface wait on ``fileno()`` with poll and drain with ``recv_nowait`` (the RPC core's
pattern); the raw baseline uses plain blocking pyzmq calls. Measures sequential round-trip
latency (p50/p99) and pipelined throughput (window 256; 64 B and 64 KiB payloads), as
medians of interleaved repetitions, and prints the ratio to the baseline of the same
endpoint kind (memory is compared with raw inproc, unix with raw ipc). Also times recv with copy=True against
copy=False (+ ``.bytes``). Run: ``python bench/transports.py [--quick]``.
"""
from __future__ import annotations

import os
import select
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script: this checkout

from multifrost.transports import open_child_end, open_parent_end  # noqa: E402
from multifrost.transports.zeromq import _shared_context  # noqa: E402

WINDOW = 256
STOP = b"\xffstop"


def poller_for(fd: int):
    """A poll function waiting (at most 100 ms) for ``fd`` to turn readable."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return lambda: poller.poll(100)


# -- the interface -----------------------------------------------------------------------

class InterfaceSide:
    """A child end echoing in a thread and a parent end connected to it."""

    def __init__(self, url: str) -> None:
        self.child = open_child_end(url, bind=True)
        self.parent = open_parent_end(self.child.endpoint, bind=False)
        self.wait = poller_for(self.parent.fileno())
        self.thread = threading.Thread(target=self._echo)
        self.thread.start()

    def _echo(self) -> None:
        child = self.child
        wait = poller_for(child.fileno())
        while True:
            item = child.recv_nowait()
            if item is None:
                wait()
                continue
            peer, payload = item
            if payload == STOP:
                return
            while not child.send_nowait(peer, payload):
                wait()

    def send(self, payload: bytes) -> bool:
        return self.parent.send_nowait(payload)

    def recv(self) -> bytes:
        parent = self.parent
        while True:
            payload = parent.recv_nowait()
            if payload is not None:
                return payload
            self.wait()

    def recv_ready(self) -> bytes | None:
        return self.parent.recv_nowait()

    def close(self) -> None:
        self.parent.send_blocking(STOP)
        self.thread.join()
        self.parent.close()
        self.child.close()


# -- the raw pyzmq baseline ----------------------------------------------------------------

class RawSide:
    """A raw ROUTER echoing in a thread (blocking pyzmq) and a raw DEALER."""

    def __init__(self, url: str) -> None:
        ctx = _shared_context()
        self.router = ctx.socket(zmq.ROUTER)
        if url.startswith("tcp://") and url.endswith(":0"):
            self.router.bind(url[:-1] + "*")
        else:
            self.router.bind(url)
        endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.connect(endpoint)
        self.thread = threading.Thread(target=self._echo)
        self.thread.start()

    def _echo(self) -> None:
        router = self.router
        while True:
            frames = router.recv_multipart()
            if frames[-1] == STOP:
                return
            router.send_multipart(frames)

    def send(self, payload: bytes) -> bool:
        try:
            self.dealer.send_multipart([b"", payload], zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def recv(self) -> bytes:
        return self.dealer.recv_multipart()[1]

    def recv_ready(self) -> bytes | None:
        try:
            return self.dealer.recv_multipart(zmq.NOBLOCK)[1]
        except zmq.Again:
            return None

    def close(self) -> None:
        self.dealer.send_multipart([b"", STOP])
        self.thread.join()
        self.dealer.close(linger=0)
        self.router.close(linger=0)


# -- measurements ----------------------------------------------------------------------------

def settings(quick: bool) -> dict:
    """Repetitions, sequential round trips and pipelined messages per payload size."""
    return {"reps": 3 if quick else 5, "rtt_calls": 1000 if quick else 3000,
            "throughput": {64: 10_000 if quick else 30_000, 65536: 1000 if quick else 3000}}


def latency(side, calls: int) -> tuple[float, float]:
    payload = b"x" * 64
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        while not side.send(payload):
            pass
        side.recv()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def throughput(side, size: int, total: int) -> float:
    payload = b"y" * size
    sent = received = 0
    start = time.perf_counter()
    while received < total:
        while sent < total and sent - received < WINDOW and side.send(payload):
            sent += 1
        side.recv()
        received += 1
        while side.recv_ready() is not None:
            received += 1
    return total / (time.perf_counter() - start)


def measure(make, url: str, config: dict) -> dict[str, float]:
    side = make(url)
    try:
        p50, p99 = latency(side, config["rtt_calls"])
        sizes = config["throughput"]
        return {"p50": p50, "p99": p99, "tp64": throughput(side, 64, sizes[64]),
                "tp64k": throughput(side, 65536, sizes[65536])}
    finally:
        side.close()


def urls(kind: str, tmpdir: str) -> str:
    if kind == "tcp":
        return "tcp://127.0.0.1:0"
    if kind in ("ipc", "unix"):
        return f"{kind}://{tmpdir}/{uuid.uuid4().hex[:8]}.sock"
    return f"{kind}://{uuid.uuid4().hex}"


def copy_micro(reps: int) -> list[tuple[int, float, float]]:
    """recv with copy=True vs copy=False (then .bytes) on inproc, µs per message: (size, True, False)."""
    ctx = _shared_context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    name = f"inproc://copy-{uuid.uuid4().hex}"
    a.bind(name)
    b.connect(name)
    rows = []
    for size in (64, 65536):
        payload = b"z" * size
        n = 20000 if size == 64 else 3000
        results = {True: [], False: []}
        for _ in range(reps):
            for copy in (True, False):
                start = time.perf_counter()
                for _ in range(n):
                    a.send(payload)
                    frame = b.recv(copy=copy)
                    if not copy:
                        frame = frame.bytes
                results[copy].append((time.perf_counter() - start) / n * 1e6)
        rows.append((size, statistics.median(results[True]), statistics.median(results[False])))
    a.close(linger=0)
    b.close(linger=0)
    return rows


PAIRS = [("tcp", "tcp"), ("ipc", "ipc"), ("inproc", "inproc"), ("memory", "inproc"), ("unix", "ipc")]
FIELDS = ("p50", "p99", "tp64", "tp64k")


def run(quick: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Every backend and its raw baseline, interleaved; medians per (side, kind), plus the copy micro-benchmark."""
    config = settings(quick)
    tmpdir = tempfile.mkdtemp(prefix="mfb")
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for rep in range(config["reps"]):  # interleave every variant in each repetition
            if progress:
                progress(f"repetition {rep + 1}/{config['reps']}")
            for kind, raw_kind in PAIRS:
                runs.setdefault(("iface", kind), []).append(measure(InterfaceSide, urls(kind, tmpdir), config))
                if kind == raw_kind:
                    runs.setdefault(("raw", kind), []).append(measure(RawSide, urls(kind, tmpdir), config))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    medians = {key: {f: statistics.median(r[f] for r in rows) for f in FIELDS} for key, rows in runs.items()}
    return {"config": config, "medians": medians, "copy": copy_micro(config["reps"])}


def report(result: dict) -> list[str]:
    """The table (and the copy micro-benchmark) of a ``run()`` result, as text lines."""
    config, med = result["config"], result["medians"]
    lines = [f"medians of {config['reps']} interleaved runs; latency over {config['rtt_calls']} sequential round trips; "
             f"throughput with window {WINDOW} (msgs/s)"]
    header = f"{'backend':<9}{'p50 µs':>9}{'p99 µs':>9}{'64B msg/s':>12}{'64KiB msg/s':>13}"
    lines.append(header + f"   {'ratio vs raw (p50 / p99 / tput64 / tput64k)':<40}")
    for kind, raw_kind in PAIRS:
        for label, key in ((kind, ("iface", kind)), (f"raw {kind}", ("raw", kind))):
            if key not in med:
                continue
            row = [med[key][f] for f in FIELDS]
            line = f"{label:<9}{row[0]:>9.1f}{row[1]:>9.1f}{row[2]:>12.0f}{row[3]:>13.0f}"
            if key[0] == "iface":
                base = [med[("raw", raw_kind)][f] for f in FIELDS]
                line += (f"   {row[0] / base[0]:.2f}x / {row[1] / base[1]:.2f}x / "
                         f"{base[2] / row[2]:.2f}x / {base[3] / row[3]:.2f}x  (vs raw {raw_kind}; "
                         "higher = slower)")
            lines.append(line)
    lines += ["", "recv copy=True vs copy=False+.bytes (inproc PAIR, send+recv per message, µs):"]
    lines += [f"  {size:>6} B: copy=True {t:6.2f}  copy=False {f:6.2f}  ratio {f / t:4.2f}"
              for size, t, f in result["copy"]]
    return lines


def main() -> None:
    print("\n".join(report(run(quick="--quick" in sys.argv))))


if __name__ == "__main__":
    main()
