"""The parent side of the multi-host tests, run inside a network namespace; it reports on
stdout, one JSON object a line (times are time.monotonic(), which every process shares).

- ``call SERVICE``: connect, call ``where()``, report the answer or the error and how long it took;
- ``pool SERVICE``: ``WorkerPool.connect``, then call ``where()`` in a loop, reporting each
  answer, until a line ``stop`` (or EOF) arrives on stdin;
- ``instances``: the service's live instances in the registry.
"""
import argparse
import json
import sys
import threading
import time

from multifrost import ParentWorker, WorkerPool
from multifrost.registries import live_instances, open_registry


def report(**fields):
    print(json.dumps(fields), flush=True)


def failure(exc, started):
    report(error=type(exc).__name__, message=str(exc), elapsed=time.monotonic() - started)


def call(args, curve):
    started = time.monotonic()
    try:
        with ParentWorker.connect(args.service, timeout=args.timeout, registry=args.registry, **curve) as worker:
            answer = worker.call_function("where", timeout=args.timeout)
            report(answer=answer, endpoint=worker.endpoint, elapsed=time.monotonic() - started)
    except Exception as exc:
        failure(exc, started)


def pool(args, curve):
    stop = threading.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    with WorkerPool.connect(args.service, registry=args.registry, timeout=args.timeout, poll_interval=0.2,
                            heartbeat_interval=0.3, heartbeat_timeout=0.3, heartbeat_max_misses=1, **curve) as p:
        report(ready=sorted({pid for _, pid in p.map("where", [()] * 8, timeout=args.timeout)}))
        while not stop.is_set():
            started = time.monotonic()
            try:
                report(pid=p.call_function("where", timeout=1.0)[1], t=started, took=time.monotonic() - started)
            except Exception as exc:
                report(error=type(exc).__name__, message=str(exc), t=started, took=time.monotonic() - started)
            stop.wait(0.02)
    report(done=True)


def instances(args):
    registry = open_registry(args.registry)
    report(instances=[{"pid": e.pid, "host": e.host, "port": e.port} for e in live_instances(registry, args.service)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["call", "pool", "instances"])
    parser.add_argument("service")
    parser.add_argument("--registry", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--curve-secret-key")
    parser.add_argument("--curve-server-key")
    args = parser.parse_args()
    curve = {k: v for k, v in (("curve_secret_key", args.curve_secret_key),
                               ("curve_server_key", args.curve_server_key)) if v}
    if args.mode == "instances":
        instances(args)
    else:
        {"call": call, "pool": pool}[args.mode](args, curve)


if __name__ == "__main__":
    main()
