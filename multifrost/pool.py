"""WorkerPool: N worker processes of one script behind one call interface.

Each call goes to the worker with the fewest calls in flight (ties broken round-robin),
skipping workers whose circuit is open while another one is usable. CPU-bound work
spreads over the cores this way: keep several calls in flight, with ``acall`` and
``asyncio.gather``, with several threads, or with ``map``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable

from .parent import ParentWorker
from .proxy import STREAM_OPTIONS, CallProxy
from .streams import AsyncStream, SyncStream

if TYPE_CHECKING:
    from .service_pool import ServicePool

log = logging.getLogger(__name__)


class WorkerPool:
    """A pool of ParentWorkers. Build it with ``spawn`` (no I/O), then ``start()`` or
    ``astart()`` (or use it as a context manager); ``close()`` closes every worker."""

    def __init__(self, workers: list[ParentWorker]) -> None:
        if not workers:
            raise ValueError("a WorkerPool needs at least one worker")
        self.workers = list(workers)
        self._in_flight = [0] * len(workers)
        self._next = 0
        self._lock = threading.Lock()
        self.call = CallProxy(self.call_function)
        self.acall = CallProxy(self.acall_function)
        self.stream = CallProxy(self.stream_function, allowed=STREAM_OPTIONS)
        self.astream = CallProxy(self.astream_function, allowed=STREAM_OPTIONS)

    @classmethod
    def spawn(cls, script: str, workers: int = 2, **spawn_options: Any) -> "WorkerPool":
        """``workers`` processes running ``script``; ``spawn_options`` go to ``ParentWorker.spawn``."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        return cls([ParentWorker.spawn(script, **spawn_options) for _ in range(workers)])

    @classmethod
    def connect(cls, service_id: str, registry: Any = None, **connect_options: Any) -> "ServicePool":
        """Every live instance of the service ``service_id``, on any host, behind one call interface,
        following instances that join and leave (see multifrost.service_pool). ``connect_options``
        go to ``ParentWorker.connect`` (CURVE keys, heartbeats, ...), plus ``poll_interval``."""
        from .service_pool import ServicePool
        return ServicePool(service_id, registry, **connect_options)

    @property
    def pids(self) -> list[int | None]:
        """The process id of each worker, in order."""
        return [w.pid for w in self.workers]

    @property
    def in_flight(self) -> list[int]:
        """Calls in flight on each worker, as this pool counts them."""
        with self._lock:
            return list(self._in_flight)

    def __len__(self) -> int:
        return len(self.workers)

    def __repr__(self) -> str:
        return f"<WorkerPool of {len(self.workers)}: in flight {self._in_flight}>"

    # -- choosing a worker -------------------------------------------------------------------

    def _acquire(self) -> int:
        """The index of the least busy usable worker, counted as busy one call more."""
        with self._lock:
            count = len(self.workers)
            order = [(self._next + i) % count for i in range(count)]
            usable = [i for i in order if not self.workers[i].circuit_open] or order
            index = min(usable, key=self._in_flight.__getitem__)
            self._in_flight[index] += 1
            self._next = (index + 1) % count
            return index

    def _release(self, index: int) -> None:
        with self._lock:
            self._in_flight[index] -= 1

    # -- sync API ----------------------------------------------------------------------------

    def start(self) -> "WorkerPool":
        """Start every worker (concurrently); if one fails, close the others and raise its error."""
        if len(self.workers) == 1:
            self.workers[0].start()
            return self
        with ThreadPoolExecutor(len(self.workers), thread_name_prefix="multifrost-pool-start") as starter:
            futures = [starter.submit(w.start) for w in self.workers]
        errors = [error for error in (f.exception() for f in futures) if error is not None]
        if errors:
            self._close_all(quiet=True)
            raise errors[0]
        return self

    def call_function(self, function: str, args: Iterable = (), **options: Any) -> Any:
        """Call ``function(*args)`` on the least busy worker (options: ``timeout``, ``namespace``)."""
        index = self._acquire()
        try:
            return self.workers[index].call_function(function, tuple(args), **options)
        finally:
            self._release(index)

    def stream_function(self, function: str, args: Iterable = (), **options: Any) -> SyncStream:
        """Stream from the least busy worker (options as ``ParentWorker.stream_function``); an
        open stream does not count as a call in flight."""
        return self.workers[self._pick()].stream_function(function, tuple(args), **options)

    def _pick(self) -> int:
        index = self._acquire()
        self._release(index)
        return index

    def map(self, function: str, args_list: Iterable[Iterable], **options: Any) -> list[Any]:
        """Call ``function(*args)`` for each entry of ``args_list``, one caller thread per worker,
        and return the results in order; the first failure is raised after all calls ended."""
        calls = [tuple(args) for args in args_list]
        with ThreadPoolExecutor(len(self.workers), thread_name_prefix="multifrost-pool-map") as callers:
            futures = [callers.submit(self.call_function, function, args, **options) for args in calls]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Close every worker; the first error is raised after all of them were closed."""
        self._close_all(quiet=False)

    def _close_all(self, quiet: bool) -> None:
        first: BaseException | None = None
        for worker in self.workers:
            try:
                worker.close()
            except Exception as exc:
                log.warning("closing %r failed: %s", worker, exc)
                first = first or exc
        if first is not None and not quiet:
            raise first

    def __enter__(self) -> "WorkerPool":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- async API ---------------------------------------------------------------------------

    async def astart(self) -> "WorkerPool":
        """Start every worker on the running loop; if one fails, close the others and raise."""
        results = await asyncio.gather(*(w.astart() for w in self.workers), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(w.aclose() for w in self.workers), return_exceptions=True)
            raise errors[0]
        return self

    async def acall_function(self, function: str, args: Iterable = (), **options: Any) -> Any:
        """Call ``function(*args)`` on the least busy worker (async API)."""
        index = self._acquire()
        try:
            return await self.workers[index].acall_function(function, tuple(args), **options)
        finally:
            self._release(index)

    def astream_function(self, function: str, args: Iterable = (), **options: Any) -> AsyncStream:
        """``stream_function`` for the async API."""
        return self.workers[self._pick()].astream_function(function, tuple(args), **options)

    async def aclose(self) -> None:
        """Close every worker; the first error is raised after all of them were closed."""
        results = await asyncio.gather(*(w.aclose() for w in self.workers), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def __aenter__(self) -> "WorkerPool":
        return await self.astart()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
