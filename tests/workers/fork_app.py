"""A parent process for the fork tests: starts a worker, forks in one of several ways, then
reports (one JSON line on stdout) whether its worker still answers and its child still runs.

    fork_app.py API WAY WORKER_SCRIPT

API: ``sync`` (start()) or ``async`` (astart() on a loop in a thread of its own, as a web app
might run it). WAY: ``fork-exit`` (the forked child calls sys.exit(0): atexit hooks run),
``fork-os-exit`` (os._exit(0)), ``fork-sigint`` (the forked child gets SIGINT),
``mp-exit`` / ``mp-terminate`` (a multiprocessing fork-context Process that returns / is
terminated), ``pool-terminate`` (a fork-context Pool that is terminated), ``use`` (the forked
child calls, pings, restarts and closes the inherited worker and reports what happened),
``fork-early-sigterm`` (the forked child gets SIGTERM before multifrost's fork hook has run,
as a pool worker terminated right after it was forked may).
"""
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import threading
import time

api, way, script = sys.argv[1:4]
if way == "fork-early-sigterm":  # registered before multifrost's hook, so it runs first in the child
    os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))

from multifrost import MultifrostError, ParentWorker  # noqa: E402  (after the hook above)

worker = ParentWorker.spawn(script, heartbeat_interval=0.05)
loop = asyncio.new_event_loop()


def run(coro):
    """Run a coroutine on the worker's loop (async API) from this thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(30)


def add(a, b):
    if api == "sync":
        return worker.call.add(a, b, timeout=10)
    return run(worker.acall.add(a, b, timeout=10))


def child_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def use_inherited():
    """In the forked child: every use of the inherited worker; what each raised, and how fast."""
    uses = {"sync": [("call", lambda: worker.call.add(1, 2, timeout=3)), ("ping", worker.ping),
                     ("restart", worker.restart), ("close", worker.close)],
            "async": [("call", lambda: asyncio.run(worker.acall.add(1, 2, timeout=3))),
                      ("ping", lambda: asyncio.run(worker.aping())),
                      ("restart", lambda: asyncio.run(worker.arestart())),
                      ("close", lambda: asyncio.run(worker.aclose()))]}[api]
    seen = {}
    for name, use in uses:
        started = time.monotonic()
        try:
            use()
            outcome = "returned"
        except MultifrostError as exc:
            outcome = str(exc)
        seen[name] = [outcome, time.monotonic() - started]
    return seen


def sleep_forever():
    time.sleep(60)


def fork_and_wait():
    """Fork the way asked for; returns what the forked child reported, if anything."""
    context = multiprocessing.get_context("fork")
    if way == "mp-exit":
        process = context.Process(target=lambda: None)
        process.start()
        process.join(30)
        return process.exitcode
    if way == "mp-terminate":
        process = context.Process(target=sleep_forever)
        process.start()
        time.sleep(0.2)  # let it reach its target (a terminate before that is a different case)
        process.terminate()
        process.join(30)
        return process.exitcode
    if way == "pool-terminate":
        pool = context.Pool(2)
        assert pool.apply(abs, (-1,)) == 1  # the pool's processes run
        pool.terminate()
        pool.join()
        return None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        if way == "use":
            os.write(write_fd, json.dumps(use_inherited()).encode())
        else:
            os.write(write_fd, b"ready")
        os.close(write_fd)
        if way == "fork-os-exit":
            os._exit(0)
        if way == "fork-sigint":
            time.sleep(60)  # interrupted by the parent's SIGINT: KeyboardInterrupt, atexit hooks
        sys.exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        report = reader.read()
    if way == "fork-sigint":
        os.kill(pid, signal.SIGINT)
    _, status = os.waitpid(pid, 0)
    return {"status": os.waitstatus_to_exitcode(status), "report": json.loads(report) if way == "use" else None}


if api == "sync":
    worker.start()
else:
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    run(worker.astart())
child = worker.pid
assert add(1, 2) == 3
forked = fork_and_wait()
time.sleep(0.3)  # several heartbeats: a worker hurt by the fork would show it
result = {"forked": forked, "alive": child_alive(child), "same_child": worker.pid == child,
          "healthy": worker.is_healthy}
try:
    result["answer"] = add(2, 3)
except Exception as exc:
    result["answer"] = repr(exc)
if api == "sync":
    worker.close()
else:
    run(worker.aclose())
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
result["stopped_by_close"] = not child_alive(child)
print(json.dumps(result), flush=True)
