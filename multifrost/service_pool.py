"""A pool over every live instance of one service, wherever they run (``WorkerPool.connect``).

A watcher follows the registry: an instance that appears gets a member (a ParentWorker
pinned to that instance) within ``poll_interval`` seconds; a member whose instance left the
registry (its lease expired or was deleted) is closed, and its calls in flight fail. Each
call goes to the healthy member with the fewest calls in flight (ties round-robin), so a
member whose heartbeats go unanswered stops getting calls before its lease expires.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from .errors import MultifrostError, ServiceNotFoundError
from .parent import ParentWorker
from .proxy import CallProxy
from .registries import (RegistrySpec, afind_instance, close_opened, find_instance, instance_id, live_instances,
                         open_registry)
from .registry import Registry, ServiceEntry

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.5
#: Seconds a member that answers its heartbeats is kept while its instance is missing from the
#: registry: a registry that lost its data (Redis restarted) fills up again at the instances'
#: next lease renewals, within the default lease TTL. An unhealthy member missing is dropped at once.
MISSING_GRACE = 5.0
_RETRY_FAILED_AFTER = 5.0  # seconds before a member that failed to start is tried again


class ServicePool:
    """Calls spread over the live instances of ``service_id``; build it with ``WorkerPool.connect``."""

    def __init__(self, service_id: str, registry: RegistrySpec = None, *, timeout: float = 5.0,
                 poll_interval: float = DEFAULT_POLL_INTERVAL, **connect_options: Any) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}")
        self.service_id = service_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._spec = registry
        self._registry: Registry | None = None
        self._connect_options = connect_options
        self._members: dict[tuple, ParentWorker] = {}
        self._in_flight: dict[ParentWorker, int] = {}
        self._failed: dict[tuple, float] = {}
        self._missing: dict[tuple, float] = {}  # member -> when it was first found missing from the registry
        self._turn = itertools.count()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._mode: str | None = None
        self._watcher: threading.Thread | None = None
        self._atask: asyncio.Task | None = None
        self.call = CallProxy(self.call_function)
        self.acall = CallProxy(self.acall_function)

    # -- what the pool holds -------------------------------------------------------------------

    @property
    def workers(self) -> list[ParentWorker]:
        """The current members, one per live instance."""
        with self._lock:
            return list(self._members.values())

    @property
    def instances(self) -> list[tuple]:
        """The instances (``registries.instance_id``) the pool has a member for."""
        with self._lock:
            return list(self._members)

    @property
    def in_flight(self) -> list[int]:
        with self._lock:
            return [self._in_flight.get(w, 0) for w in self._members.values()]

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"<ServicePool {self.service_id!r}: {len(self._members)} instance(s), in flight {self.in_flight}>"

    def _member(self, entry: ServiceEntry) -> ParentWorker:
        return ParentWorker.connect(self.service_id, self.timeout, registry=self._registry,
                                    instance=getattr(entry, "instance", None), **self._connect_options)

    def _changes(self) -> tuple[list[tuple[tuple, ServiceEntry]], list[tuple[tuple, ParentWorker]]]:
        """(instances to add, members to drop) after one look at the registry."""
        live = {instance_id(e): e for e in live_instances(self._opened, self.service_id)}
        now = time.monotonic()
        with self._lock:
            for key in [key for key in self._missing if key in live or key not in self._members]:
                del self._missing[key]
            gone = [(key, w) for key, w in self._members.items() if key not in live
                    and (not w.is_healthy or now - self._missing.setdefault(key, now) >= MISSING_GRACE)]
            for key, _ in gone:
                del self._members[key]
                self._missing.pop(key, None)
            new = [(key, e) for key, e in live.items() if key not in self._members
                   and now - self._failed.get(key, -_RETRY_FAILED_AFTER) >= _RETRY_FAILED_AFTER]
        return new, gone

    def _added(self, key: tuple, worker: ParentWorker | None, error: BaseException | None) -> None:
        with self._lock:
            if worker is not None:
                self._members[key] = worker
                self._failed.pop(key, None)
                self._lock.notify_all()
            else:
                if key not in self._failed:
                    log.warning("cannot join instance %s of %r: %s", key[0] or key[1:], self.service_id, error)
                self._failed[key] = time.monotonic()

    # -- choosing a member --------------------------------------------------------------------

    def _pick(self) -> ParentWorker | None:
        """The least busy healthy member (any member when none is healthy), counted busy one more."""
        with self._lock:
            members = list(self._members.values())
            if not members:
                return None
            start = next(self._turn) % len(members)
            order = members[start:] + members[:start]
            usable = [w for w in order if w.is_healthy] or order
            worker = min(usable, key=lambda w: self._in_flight.get(w, 0))
            self._in_flight[worker] = self._in_flight.get(worker, 0) + 1
            return worker

    def _release(self, worker: ParentWorker) -> None:
        with self._lock:
            left = self._in_flight[worker] - 1
            if left:
                self._in_flight[worker] = left
            else:
                del self._in_flight[worker]

    def _none_left(self) -> ServiceNotFoundError:
        return ServiceNotFoundError(f"no live instance of service {self.service_id!r} in registry "
                                    f"{self._opened.location} within {self.timeout:g} s")

    @property
    def _opened(self) -> Registry:
        """The registry this pool follows (opened by start/astart)."""
        if self._registry is None:
            raise RuntimeError("this pool is not started")
        return self._registry

    def _claim(self, mode: str) -> None:
        if self._mode is not None:
            raise RuntimeError(f"this pool was already started ({self._mode} API)")
        self._mode = mode
        self._registry = open_registry(self._spec)

    # -- sync API ------------------------------------------------------------------------------

    def start(self) -> "ServicePool":
        """Join every live instance (waiting up to ``timeout`` for a first one), then follow the registry."""
        self._claim("sync")
        try:
            find_instance(self._opened, self.service_id, self.timeout)
            self._follow()
        except BaseException:
            self.close()
            raise
        self._watcher = threading.Thread(target=self._watch, name=f"multifrost-pool-{self.service_id}",
                                         daemon=True)
        self._watcher.start()
        return self

    def _follow(self) -> None:
        new, gone = self._changes()
        for key, worker in gone:
            log.info("instance %s of %r left the registry", key[0] or key[1:], self.service_id)
            worker.close()
        for key, entry in new:
            worker = self._member(entry)
            try:
                self._added(key, worker.start(), None)
            except MultifrostError as exc:
                self._added(key, None, exc)

    def _watch(self) -> None:
        failing = False
        while not self._stop.wait(self.poll_interval):
            try:
                self._follow()
                failing = False
            except MultifrostError as exc:
                if not failing:
                    log.warning("pool %r cannot follow the registry: %s", self.service_id, exc)
                failing = True

    def call_function(self, function: str, args: Iterable = (), **options: Any) -> Any:
        """Call ``function(*args)`` on the least busy healthy instance (options: ``timeout``, ``namespace``)."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while not self._members and not self._stop.is_set():
                if not self._lock.wait(max(0.0, deadline - time.monotonic())):
                    raise self._none_left()
        worker = self._pick()
        if worker is None:
            raise self._none_left()
        try:
            return worker.call_function(function, tuple(args), **options)
        finally:
            self._release(worker)

    def map(self, function: str, args_list: Iterable[Iterable], **options: Any) -> list[Any]:
        """Call ``function(*args)`` for each entry, two caller threads per instance; results in order."""
        calls = [tuple(args) for args in args_list]
        threads = max(2, 2 * len(self._members))
        with ThreadPoolExecutor(threads, thread_name_prefix="multifrost-pool-map") as callers:
            futures = [callers.submit(self.call_function, function, args, **options) for args in calls]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop following the registry and close every member."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        for worker in self._drain():
            try:
                worker.close()
            except Exception as exc:
                log.warning("closing %r failed: %s", worker, exc)
        self._release_registry()

    def _drain(self) -> list[ParentWorker]:
        with self._lock:
            members, self._members = list(self._members.values()), {}
        return members

    def _release_registry(self) -> None:
        if self._registry is not None:
            close_opened(self._registry, self._spec)
            self._registry = None

    def __enter__(self) -> "ServicePool":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- async API -----------------------------------------------------------------------------

    async def astart(self) -> "ServicePool":
        """``start`` for asyncio code: members use the async API; the watcher is a task."""
        self._claim("async")
        try:
            await afind_instance(self._opened, self.service_id, self.timeout)
            await self._afollow()
        except BaseException:
            await self.aclose()
            raise
        self._atask = asyncio.get_running_loop().create_task(self._awatch())
        return self

    async def _afollow(self) -> None:
        new, gone = await asyncio.to_thread(self._changes)
        for key, worker in gone:
            log.info("instance %s of %r left the registry", key[0] or key[1:], self.service_id)
            await worker.aclose()
        for key, entry in new:
            worker = self._member(entry)
            try:
                self._added(key, await worker.astart(), None)
            except MultifrostError as exc:
                self._added(key, None, exc)

    async def _awatch(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._afollow()
                failing = False
            except MultifrostError as exc:
                if not failing:
                    log.warning("pool %r cannot follow the registry: %s", self.service_id, exc)
                failing = True

    async def acall_function(self, function: str, args: Iterable = (), **options: Any) -> Any:
        """Call ``function(*args)`` on the least busy healthy instance (async API)."""
        deadline = time.monotonic() + self.timeout
        while (worker := self._pick()) is None:
            if time.monotonic() >= deadline or self._stop.is_set():
                raise self._none_left()
            await asyncio.sleep(min(0.05, self.poll_interval))
        try:
            return await worker.acall_function(function, tuple(args), **options)
        finally:
            self._release(worker)

    async def aclose(self) -> None:
        """Stop following the registry and close every member."""
        self._stop.set()
        if self._atask is not None:
            self._atask.cancel()
            await asyncio.gather(self._atask, return_exceptions=True)
            self._atask = None
        results = await asyncio.gather(*(w.aclose() for w in self._drain()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("closing a member failed: %s", result)
        self._release_registry()

    async def __aenter__(self) -> "ServicePool":
        return await self.astart()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
