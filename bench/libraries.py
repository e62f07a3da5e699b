"""Side by side with what Python users pick instead: per subject, the sequential ``add(1, 2)``
p50, pipelined calls/s, 1 MiB echo and spawn -> first result, each subject in its own worker
process, in interleaved rounds; ratios against raw blocking pyzmq over tcp in the same run.

    python -m bench.libraries [--quick]

Pipelined: a window of 256 calls in flight (async and raw), or 16 threads calling at once
(sync APIs without a pipelining call: multifrost sync, Pyro5; and raw pyzmq with a DEALER per
thread, the floor of ZeroMQ for 16 blocking callers). 1 MiB echo: MiB of payload
per second, each call sending 1 MiB and getting it back (one call at a time).
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Callable

import msgpack
import zmq

from bench.rpc import _add, pct, raw_sync_latency, raw_sync_throughput
from multifrost import ParentWorker
from multifrost.transports.zeromq import _shared_context

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Spawned workers import the multifrost of this checkout, like the benchmark itself.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
MIB = b"\xa5" * (1 << 20)
WINDOW, THREADS = 256, 16
RAW = "raw pyzmq, blocking, tcp"
# multifrost's subjects serve a worker with plain methods only, as a user's worker that needs no
# asyncio would be: it is served on child_loop.PollLoop and never imports asyncio.
PLAIN_WORKER = os.path.join(HERE, "_plain_worker.py")


def _echo(value):
    return value


def _threads(call: Callable[[], object], total: int, make=None) -> float:
    """Calls/s of ``total`` calls spread over THREADS threads (``make()``: a context manager giving
    each thread a callable of its own)."""
    def run(n):
        with (make() if make else contextlib.nullcontext(call)) as fn:
            for _ in range(n):
                fn()
    with ThreadPoolExecutor(THREADS) as pool:
        t0 = time.perf_counter()
        wait([pool.submit(run, total // THREADS) for _ in range(THREADS)])
        return total // THREADS * THREADS / (time.perf_counter() - t0)


def _timed(calls: int, fn: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class Raw:
    """bench/_raw_child.py (a blocking pyzmq ROUTER) and a bound blocking DEALER, over tcp."""

    name = RAW

    def start(self) -> float:
        t0 = time.perf_counter()
        self.sock = _shared_context().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_raw_child.py")],
                                     env={**os.environ, "COMLINK_ZMQ_PORT": str(port)})
        raw_sync_latency(self.sock, 1)
        return time.perf_counter() - t0

    def latency(self, calls: int) -> list[float]:
        return raw_sync_latency(self.sock, calls)

    def pipelined(self, calls: int) -> float:
        return raw_sync_throughput(self.sock, calls)

    def echo(self) -> None:
        self.sock.send_multipart([b"", msgpack.packb({"app": "comlink_ipc_v4", "id": "e", "type": "call",
                                                      "function": "echo", "args": [MIB]})])
        assert len(msgpack.unpackb(self.sock.recv_multipart()[1])["result"]) == len(MIB)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.sock.close(0)


class RawThreads(Raw):
    """Raw with THREADS DEALERs, one per calling thread (a ZeroMQ socket belongs to one thread),
    all connected to the one raw child: what blocking pyzmq itself does from THREADS threads."""

    name = f"raw pyzmq, {THREADS} threads (a DEALER each), tcp"

    def start(self) -> float:
        t0 = time.perf_counter()
        self.socks = [_shared_context().socket(zmq.DEALER) for _ in range(THREADS)]
        ports = []
        for sock in self.socks:
            sock.setsockopt(zmq.LINGER, 0)
            ports.append(str(sock.bind_to_random_port("tcp://127.0.0.1")))
        self.sock = self.socks[0]
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_raw_child.py")],
                                     env={**os.environ, "COMLINK_ZMQ_PORT": ",".join(ports)})
        for sock in self.socks:
            raw_sync_latency(sock, 1)
        return time.perf_counter() - t0

    def pipelined(self, calls: int) -> float:
        spare = iter(self.socks)

        @contextlib.contextmanager
        def make():
            sock = next(spare)
            yield lambda: raw_sync_latency(sock, 1)
        return _threads(None, calls, make)

    def close(self) -> None:
        super().close()
        for sock in self.socks[1:]:
            sock.close(0)


class MultifrostSync:
    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.name = f"multifrost sync, {transport}"

    def start(self) -> float:
        t0 = time.perf_counter()
        self.worker = ParentWorker.spawn(PLAIN_WORKER, transport=self.transport,
                                         heartbeat_interval=0).start()
        self.worker.call.add(1, 2)
        return time.perf_counter() - t0

    def latency(self, calls: int) -> list[float]:
        add = self.worker.call.add
        return _timed(calls, lambda: add(1, 2))

    def pipelined(self, calls: int) -> float:
        add = self.worker.call.add
        return _threads(lambda: add(1, 2), calls)

    def echo(self) -> None:
        assert len(self.worker.call.echo(MIB)) == len(MIB)

    def close(self) -> None:
        self.worker.close()


class MultifrostAsync:
    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.name = f"multifrost async, {transport}"
        self.loop = asyncio.new_event_loop()

    def start(self) -> float:
        t0 = time.perf_counter()
        self.worker = ParentWorker.spawn(PLAIN_WORKER, transport=self.transport,
                                         heartbeat_interval=0)
        self.loop.run_until_complete(self.worker.astart())
        self.loop.run_until_complete(self.worker.acall.add(1, 2))
        return time.perf_counter() - t0

    def latency(self, calls: int) -> list[float]:
        async def run():
            call, out = self.worker.acall_function, []
            for _ in range(calls):
                t0 = time.perf_counter()
                await call("add", (1, 2))
                out.append(time.perf_counter() - t0)
            return out
        return self.loop.run_until_complete(run())

    def pipelined(self, calls: int) -> float:
        async def run():
            call = self.worker.acall_function

            async def caller(n):  # WINDOW of these keep WINDOW calls in flight
                for _ in range(n):
                    await call("add", (1, 2))
            t0 = time.perf_counter()
            await asyncio.gather(*(caller(calls // WINDOW) for _ in range(WINDOW)))
            return calls // WINDOW * WINDOW / (time.perf_counter() - t0)
        return self.loop.run_until_complete(run())

    def echo(self) -> None:
        assert len(self.loop.run_until_complete(self.worker.acall.echo(MIB))) == len(MIB)

    def close(self) -> None:
        self.loop.run_until_complete(self.worker.aclose())
        self.loop.close()


def _pipe_child(conn) -> None:
    """multiprocessing.Pipe peer: (a, b) -> a + b, ("echo", x) -> x, None -> stop."""
    while True:
        message = conn.recv()
        if message is None:
            return
        conn.send(message[1] if message[0] == "echo" else message[0] + message[1])


class Pipe:
    name = "multiprocessing.Pipe + pickle (spawn)"

    def start(self) -> float:
        t0 = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=_pipe_child, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn.send((1, 2))
        self.conn.recv()
        return time.perf_counter() - t0

    def latency(self, calls: int) -> list[float]:
        conn = self.conn
        return _timed(calls, lambda: (conn.send((1, 2)), conn.recv()))

    def pipelined(self, calls: int) -> float:
        conn, sent, got = self.conn, 0, 0
        t0 = time.perf_counter()
        while got < calls:
            while sent < calls and sent - got < WINDOW:
                conn.send((1, 2))
                sent += 1
            conn.recv()
            got += 1
        return calls / (time.perf_counter() - t0)

    def echo(self) -> None:
        self.conn.send(("echo", MIB))
        assert len(self.conn.recv()) == len(MIB)

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(5)
        self.conn.close()


class Pool:
    name = "ProcessPoolExecutor(1) (spawn)"

    def start(self) -> float:
        t0 = time.perf_counter()
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.pool.submit(_add, 1, 2).result()
        return time.perf_counter() - t0

    def latency(self, calls: int) -> list[float]:
        return _timed(calls, lambda: self.pool.submit(_add, 1, 2).result())

    def pipelined(self, calls: int) -> float:
        t0 = time.perf_counter()
        wait([self.pool.submit(_add, 1, 2) for _ in range(calls)])
        return calls / (time.perf_counter() - t0)

    def echo(self) -> None:
        assert len(self.pool.submit(_echo, MIB).result()) == len(MIB)

    def close(self) -> None:
        self.pool.shutdown()


class Pyro:
    name = "Pyro5 (msgpack, TCP_NODELAY)"

    def start(self) -> float:
        import Pyro5
        import Pyro5.api
        Pyro5.config.SERIALIZER = "msgpack"
        Pyro5.config.SOCK_NODELAY = True
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_pyro_server.py")],
                                     stdout=subprocess.PIPE, text=True)
        self.uri = self.proc.stdout.readline().strip()
        self.proxy = Pyro5.api.Proxy(self.uri)
        self.proxy.add(1, 2)
        return time.perf_counter() - t0

    def latency(self, calls: int) -> list[float]:
        proxy = self.proxy
        return _timed(calls, lambda: proxy.add(1, 2))

    def pipelined(self, calls: int) -> float:
        import Pyro5.api

        @contextlib.contextmanager
        def make():
            with Pyro5.api.Proxy(self.uri) as proxy:  # a proxy belongs to one thread
                yield lambda: proxy.add(1, 2)
        return _threads(None, calls, make)

    def echo(self) -> None:
        assert len(self.proxy.echo(MIB)) == len(MIB)

    def close(self) -> None:
        self.proxy._pyroRelease()
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def subjects() -> list:
    made = [Raw(), RawThreads(), MultifrostSync("tcp"), MultifrostAsync("tcp"), MultifrostSync("unix"), MultifrostAsync("unix"),
            Pipe(), Pool()]
    try:
        import Pyro5  # noqa: F401  (the [bench] extra)
        made.append(Pyro())
    except ImportError:
        pass
    return made


def run(rounds: int = 5, calls: int = 2000, echoes: int = 100, progress: Callable[[str], None] | None = None) -> dict:
    """``rounds`` interleaved rounds; in each, every subject is started afresh (spawn -> first result),
    then timed: ``calls`` sequential calls, ``10 * calls`` pipelined, ``echoes`` 1 MiB echoes."""
    samples: dict[str, dict[str, list[float]]] = {}
    for number in range(rounds):
        for subject in subjects():
            if progress:
                progress(f"round {number + 1}/{rounds}: {subject.name}")
            row = samples.setdefault(subject.name, {})
            row.setdefault("spawn", []).append(subject.start())
            try:
                subject.latency(200)  # warm up
                row.setdefault("p50", []).append(pct(subject.latency(calls), 0.5))
                row.setdefault("pipelined", []).append(subject.pipelined(calls * 10))
                subject.echo()
                t0 = time.perf_counter()
                for _ in range(echoes):
                    subject.echo()
                row.setdefault("mib", []).append(echoes / (time.perf_counter() - t0))
            finally:
                subject.close()
    rows = {name: {key: statistics.median(values) for key, values in row.items()} for name, row in samples.items()}
    return {"rounds": rounds, "calls": calls, "echoes": echoes, "rows": rows}


def report(result: dict) -> list[str]:
    rows = result["rows"]
    raw = rows[RAW]
    lines = [f"medians of {result['rounds']} interleaved rounds, each subject freshly spawned per round; "
             f"{result['calls']} sequential `add(1, 2)` calls, pipelined with a window of {WINDOW} "
             f"(or {THREADS} threads for sync APIs), {result['echoes']} echoes of 1 MiB; "
             "ratios against raw blocking pyzmq over tcp in the same run (p50: lower is better; "
             "the others: higher is better); multifrost byte-compiled first, as installing it does", "",
             "| subject | p50 µs | vs raw | pipelined calls/s | vs raw | 1 MiB echo MiB/s | vs raw | spawn → 1st result |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['p50'] * 1e6:.1f} | {row['p50'] / raw['p50']:.2f}x | {row['pipelined']:,.0f} | "
                     f"{row['pipelined'] / raw['pipelined']:.2f}x | {row['mib']:,.0f} | {row['mib'] / raw['mib']:.2f}x | "
                     f"{row['spawn'] * 1000:.0f} ms |")
    return lines


def compile_multifrost() -> None:
    """Byte-compile multifrost, as installing it does: with PYTHONDONTWRITEBYTECODE set and no
    ``__pycache__`` (a source checkout), every spawned worker would compile it from source,
    about 40 ms of each spawn that an installed package never pays (the other subjects are
    installed packages)."""
    import compileall
    compileall.compile_dir(os.path.join(ROOT, "multifrost"), quiet=1)


def main() -> None:
    quick = "--quick" in sys.argv
    compile_multifrost()
    result = run(rounds=3 if quick else 5, calls=1000 if quick else 2000, echoes=10 if quick else 100,
                 progress=lambda text: print(f"\r{text:<78}", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    print("\n".join(report(result)))


if __name__ == "__main__":
    main()
