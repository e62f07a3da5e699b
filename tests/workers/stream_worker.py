"""A worker with generator methods, cancellable methods and deadline probes, for tests/test_streams.py
and tests/test_cancel.py. State about each run is kept per ``tag`` so that a test can ask for it."""
import asyncio
import os
import threading
import time

import multifrost
from multifrost import ChildWorker


class StreamWorker(ChildWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state = {}
        self.lock = threading.Lock()

    def _note(self, tag, **fields):
        with self.lock:
            self.state.setdefault(tag, {"produced": 0}).update(fields)

    def _produced(self, tag):
        with self.lock:
            entry = self.state.setdefault(tag, {"produced": 0})
            entry["produced"] += 1

    # -- generators -------------------------------------------------------------------------

    def rows(self, n, tag="rows"):
        try:
            for i in range(n):
                self._produced(tag)
                yield i
        except GeneratorExit:
            self._note(tag, exit="GeneratorExit")
            raise
        finally:
            self._note(tag, finally_at=time.monotonic())

    async def arows(self, n, tag="arows"):
        try:
            for i in range(n):
                self._produced(tag)
                yield i
                await asyncio.sleep(0)
        except (GeneratorExit, asyncio.CancelledError) as exc:  # at its yield / at its await
            self._note(tag, exit=type(exc).__name__)
            raise
        finally:
            self._note(tag, finally_at=time.monotonic())

    def blobs(self, n, size):
        for i in range(n):
            yield bytes([i % 256]) * size

    def paced(self, n, seconds):
        """Yield an item every ``seconds``: the time each was produced (this process's monotonic clock)."""
        for _ in range(n):
            time.sleep(seconds)
            yield time.monotonic()

    def fails_after(self, k):
        for i in range(k):
            yield i
        raise ValueError(f"broke after {k}")

    async def afails_after(self, k):
        for i in range(k):
            yield i
        raise ValueError(f"broke after {k}")

    async def astatus(self, tag):
        """``status`` on the event loop: answers even while every pool thread is busy."""
        return self.status(tag)

    def crash_after(self, k):
        for i in range(k):
            yield i
        time.sleep(0.2)  # let the items leave first
        os._exit(3)

    def status(self, tag):
        with self.lock:
            return dict(self.state.get(tag, {"produced": 0}))

    # -- cancellation and deadlines ----------------------------------------------------------

    async def wait_cancelled(self, tag, seconds):
        """Sleeps; notes when (and whether) it saw CancelledError."""
        self._note(tag, started_at=time.monotonic())
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self._note(tag, cancelled_at=time.monotonic())
            raise
        self._note(tag, finished=True)
        return seconds

    def poll_cancelled(self, tag, seconds):
        """A plain method that polls current_call() and stops early when cancelled."""
        call = multifrost.current_call()
        self._note(tag, started_at=time.monotonic(), deadline=call.deadline)
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if call.cancelled:
                self._note(tag, cancelled_at=time.monotonic())
                return "stopped"
            time.sleep(0.001)
        self._note(tag, finished=True)
        return "finished"

    def remaining(self):
        """What current_call() says about this call's deadline: seconds left, or None."""
        call = multifrost.current_call()
        return None if call.deadline is None else call.deadline - time.monotonic()

    def block_until(self, path, seconds):
        """Hold a pool thread until ``path`` exists (``astatus(path)`` says when it started)."""
        self._note(path, started_at=time.monotonic())
        until = time.monotonic() + seconds
        while not os.path.exists(path) and time.monotonic() < until:
            time.sleep(0.005)
        return os.path.exists(path)

    def mark(self, tag):
        self._note(tag, ran=True)
        return tag

    def traced_rows(self, n):
        for _ in range(n):
            yield self.traced()

    def traceparent(self):
        return multifrost.current_call().traceparent

    def counts(self):
        return self.call_counts

    async def acounts(self):
        """``counts`` on the event loop: answers even while every pool thread is busy."""
        return self.call_counts

    def now(self):
        return time.monotonic()

    def traced(self):
        """The current span as the worker sees it: its trace id, its parent's span id (hex) and its kind."""
        from opentelemetry import trace
        span = trace.get_current_span()
        context = span.get_span_context()
        if not context.is_valid:
            return None
        parent = getattr(span, "parent", None)
        return [f"{context.trace_id:032x}", parent and f"{parent.span_id:016x}", str(getattr(span, "kind", ""))]


if __name__ == "__main__":
    if os.environ.get("STREAM_WORKER_OTEL"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())
    workers = os.environ.get("STREAM_WORKER_THREADS")
    StreamWorker(max_workers=int(workers) if workers else None).run()
