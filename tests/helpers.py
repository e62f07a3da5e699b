"""Test helpers: drive the sync and the async API through one interface."""
import asyncio
import os
import threading
import time

from multifrost import ParentWorker


class SyncClient:
    """The sync API as it is."""

    api = "sync"

    def __init__(self, worker: ParentWorker) -> None:
        self.worker = worker

    def start(self):
        self.worker.start()

    def call(self, function, *args, **options):
        return self.worker.call_function(function, args, **options)

    def fire(self, calls):
        """Start ``[(function, args), ...]`` concurrently (a thread each); returns
        ``results(timeout)``, which waits for every outcome (a result or an exception)."""
        outcomes = [None] * len(calls)

        def run(i, function, args):
            try:
                outcomes[i] = self.worker.call_function(function, args)
            except Exception as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=run, args=(i, f, a)) for i, (f, a) in enumerate(calls)]
        for t in threads:
            t.start()

        def results(timeout):
            deadline = time.monotonic() + timeout
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
                assert not t.is_alive(), "a call never resolved"
            return outcomes
        return results

    def many(self, calls, timeout=120):
        """Run calls concurrently and return their outcomes."""
        return self.fire(calls)(timeout)

    def restart(self):
        self.worker.restart()

    def close(self):
        self.worker.close()


class AsyncClient:
    """The async API, driven on an event loop in a thread of its own."""

    api = "async"

    def __init__(self, worker: ParentWorker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self):
        try:
            self.run(self.worker.astart())
        except BaseException:
            self._stop_loop()
            raise

    def call(self, function, *args, **options):
        return self.run(self.worker.acall_function(function, args, **options))

    def fire(self, calls):
        """Start calls concurrently on the loop; returns ``results(timeout)``."""
        async def all_of():
            return await asyncio.gather(*(self.worker.acall_function(f, a) for f, a in calls),
                                        return_exceptions=True)
        future = asyncio.run_coroutine_threadsafe(all_of(), self.loop)
        return future.result

    def many(self, calls, timeout=120):
        """Run calls concurrently and return their outcomes."""
        return self.fire(calls)(timeout)

    def restart(self):
        self.run(self.worker.arestart())

    def close(self):
        try:
            self.run(self.worker.aclose())
        finally:
            self._stop_loop()

    def _stop_loop(self):
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


CLIENTS = {"sync": SyncClient, "async": AsyncClient}


def wait_until(condition, what: str, timeout: float = 15.0):
    """Poll ``condition`` until it is true (returns its value); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(predicate, timeout: float, what: str):
    """``wait_until`` with the timeout first, as the multi-host tests write it."""
    return wait_until(predicate, what, timeout)


def stop_all(procs) -> None:
    """Fixture teardown: terminate the service processes still running, reap each, close its stderr pipe."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()
