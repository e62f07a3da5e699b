"""A parent process for the exit tests: starts a worker, prints the child's pid, then waits.

    parent_app.py MODE WORKER_SCRIPT [CALL_JSON]

MODE: ``default`` (no handlers of its own), ``user`` (its own SIGTERM handler, installed first),
``async`` (the async API under asyncio.run), ``atexit`` (returns without closing the worker),
``thread`` (starts the worker from another thread), ``ignored`` (SIGINT ignored before start),
``call`` (reports the result of CALL_JSON, ``[function, args]``, then waits), ``busy`` (makes that
call in a thread of its own, then waits).
"""
import asyncio
import json
import os
import signal
import sys
import threading

from multifrost import ParentWorker

mode, script = sys.argv[1], sys.argv[2]


def report(*words):
    print(*words, flush=True)


def user_handler(signum, frame):
    report("user handler ran; child", "alive" if os.path.exists(f"/proc/{worker.pid}") else "gone")
    os._exit(7)  # no atexit hooks: only the library's signal handler can have stopped the child


worker = ParentWorker.spawn(script)
if mode == "user":
    signal.signal(signal.SIGTERM, user_handler)
if mode == "ignored":
    signal.signal(signal.SIGINT, signal.SIG_IGN)

if mode == "async":
    async def main():
        await worker.astart()
        report("pid", worker.pid)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    asyncio.run(main())
elif mode == "thread":
    starter = threading.Thread(target=worker.start)
    starter.start()
    starter.join()
    report("pid", worker.pid)
    report("handler", "ours" if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL else "default")
else:
    worker.start()
    report("pid", worker.pid)
    if mode == "ignored":
        report("sigint", "ignored" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "handled")
    if mode == "call":
        try:
            report("result", json.dumps(worker.call_function(*json.loads(sys.argv[3]))))
        except KeyboardInterrupt:
            report("interrupted")
            raise
    if mode == "busy":
        threading.Thread(target=worker.call_function, args=json.loads(sys.argv[3]), daemon=True).start()
    if mode not in ("atexit", "thread", "ignored"):
        sys.stdin.read()
