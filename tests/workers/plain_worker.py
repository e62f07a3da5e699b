"""A worker with plain methods only (no ``async def``): ``run()`` serves it on child_loop.PollLoop,
without importing asyncio; $SHUTDOWN_GRACE sets its grace, $TEST_MAX_HELD_BYTES its held budget.

    plain_worker.py [SERVICE_ID]   (with a service id: a connect-mode service)
"""
import os
import sys
import threading
import time

import multifrost
from multifrost import ChildWorker


class PlainWorker(ChildWorker):
    def __init__(self, service_id=None, **options):
        super().__init__(service_id, **options)
        self._status = {}
        self._waiting = 0
        self._lock = threading.Lock()

    def served_by(self):
        """The class of the loop serving this worker, and the asyncio modules this process imported."""
        return [type(self._loop).__name__, sorted(m for m in sys.modules if m.split(".")[0] == "asyncio")]

    def spins(self):
        """Whether the serving PollLoop spins before it sleeps."""
        return self._loop._spinner.enabled

    def add(self, a, b):
        return a + b

    def make_bytes(self, n):
        return b"\0" * n

    def backlog(self):
        """What this worker holds for peers that do not read: [bytes held, replies dropped]."""
        return [self._held.bytes_held, self._held.dropped]

    def hold(self, path, seconds):
        """Create ``path``, then block for ``seconds``."""
        open(path, "w").close()
        time.sleep(seconds)

    def coroutine_result(self, value):
        """A plain method that returns an awaitable anyway (this imports asyncio in the worker)."""
        import asyncio

        async def later():
            await asyncio.sleep(0)
            return value
        return later()

    def block_until(self, path, seconds):
        """Block until ``path`` exists (at most ``seconds``); True when it did."""
        with self._lock:
            self._waiting += 1
        until = time.monotonic() + seconds
        while not os.path.exists(path) and time.monotonic() < until:
            time.sleep(0.005)
        return os.path.exists(path)

    def waiting(self):
        """How many block_until calls have started."""
        return self._waiting

    def poll_cancelled(self, tag, seconds):
        """Poll current_call() for up to ``seconds``; ``status(tag)`` says whether it saw a cancel."""
        call = multifrost.current_call()
        self._status[tag] = {"deadline": call.deadline is not None}
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if call.cancelled:
                self._status[tag]["reason"] = call.reason
                return "stopped"
            time.sleep(0.002)
        self._status[tag]["finished"] = True
        return "finished"

    def status(self, tag):
        return self._status.get(tag, {})

    def rows(self, n):
        yield from range(n)

    def stop_from_a_thread(self):
        """Call stop() from a thread of its own, as code beside the worker would."""
        threading.Thread(target=self.stop, name="stopper").start()
        return True


if __name__ == "__main__":
    options = {"max_held_bytes": int(os.environ["TEST_MAX_HELD_BYTES"])} if "TEST_MAX_HELD_BYTES" in os.environ else {}
    service_id = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--worker" else None  # connect mode
    PlainWorker(service_id, shutdown_grace=float(os.environ.get("SHUTDOWN_GRACE", "5")),
                **options).run()
