"""A MathWorker whose calls wait for a file, for shutdown tests; $SHUTDOWN_GRACE sets its grace.

    slow_worker.py [SERVICE_ID]   (with a service id: a connect-mode service)
"""
import asyncio
import os
import threading
import time

from math_worker import MathWorker


class SlowWorker(MathWorker):
    def __init__(self, service_id=None, **options):
        super().__init__(service_id, **options)
        self._waiting = 0
        self._lock = threading.Lock()

    def block_until(self, path, seconds):
        """Plain: block a pool thread until ``path`` exists (at most ``seconds``); True when it did."""
        with self._lock:
            self._waiting += 1
        return self.wait_for(path, seconds)

    async def await_until(self, path, seconds):
        """Async: the same, as a task on the loop."""
        with self._lock:
            self._waiting += 1
        deadline = time.monotonic() + seconds
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def waiting(self):
        """How many block_until/await_until calls have started."""
        return self._waiting


if __name__ == "__main__":
    import sys
    service_id = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--worker" else None  # connect mode
    SlowWorker(service_id, shutdown_grace=float(os.environ.get("SHUTDOWN_GRACE", "5"))).run()
