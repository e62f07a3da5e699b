"""ParentWorker: call a worker's methods as if they were local, from threads or asyncio.

A worker is started with ``start()`` (the sync API: ``w.call.add(1, 2)``) or ``astart()``
(the async API: ``await w.acall.add(1, 2)``). This is the facade: the lifecycle's decisions
are the core's (``lifecycle.py``), the call path is ``calls.py``, and one driver per API
(``sync_driver.py``, ``async_driver.py``) carries out what the core decides.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Iterable

from .. import exit_hooks, extensions, tracing
from .._limits import Limits
from ..errors import MultifrostError
from ..logs import bind
from ..metrics import Metrics, NullMetrics
from ..options import WorkerOptions
from ..process import ChildProcess
from ..proxy import STREAM_OPTIONS, CallProxy
from ..streams import AsyncStream, SyncStream
from ..target import Target
from ..targets import ConnectTarget, InprocessTarget, SpawnTarget
from . import lifecycle as lc
from .async_driver import AsyncDriver
from .calls import UNSET as _UNSET, CallPath, parent_log
from .driver import CLOSE_GRACE, new_core
from .sync_driver import SyncDriver

if TYPE_CHECKING:
    from ..child import ChildWorker
    from ..registry import Registry

_FORKED = "forked"  # the mode of a worker inherited through fork(): unusable in this process


class ParentWorker(CallPath):
    """A handle on one worker. Build it with ``spawn``, ``connect`` or ``inprocess``; those do no I/O."""

    def __init__(self, target: Target, options: WorkerOptions) -> None:
        self._target = target
        self._options = options
        self._mode: str | None = None
        self._owner_pid: int | None = None  # the process that started the worker
        self._lock = threading.RLock()  # the core's: the sync API reaches it from several threads
        self.metrics = Metrics() if options.metrics else NullMetrics()
        self._log = bind(parent_log, worker_id=target.name, service_id=target.service_id)
        self._core = new_core(self)
        self._driver: SyncDriver | AsyncDriver | None = None
        self._sync: SyncDriver = None  # type: ignore[assignment]  # start() sets it
        self._async: AsyncDriver = None  # type: ignore[assignment]  # astart() sets it
        self._live_key: int | None = None
        self.call = CallProxy(self.call_function)
        self.acall = CallProxy(self.acall_function)
        self.stream = CallProxy(self.stream_function, allowed=STREAM_OPTIONS)  # issue 15
        self.astream = CallProxy(self.astream_function, allowed=STREAM_OPTIONS)

    # -- factories -------------------------------------------------------------------------

    @classmethod
    def spawn(cls, script: str, executable: str | None = None, *, args: tuple = (), env: dict | None = None,
              cwd: str | None = None, transport: str = "auto", default_timeout: float | None = None,
              auto_restart: bool = False, max_restart_attempts: int = 5, heartbeat_interval: float = 5.0,
              heartbeat_timeout: float = 3.0, heartbeat_max_misses: int = 3, start_timeout: float = 10.0,
              circuit_reset_timeout: float = 10.0, on_output: Callable[[str, str], None] | None = None,
              client_name: str | None = None, limits: Limits | None = None,
              metrics: bool = True) -> "ParentWorker":
        """A worker process running ``script`` (with ``executable``, default this Python); ``transport``
        "auto" is unix for a script on this Python, tcp for any other program."""
        options = WorkerOptions(default_timeout=default_timeout, auto_restart=auto_restart,
                                max_restart_attempts=max_restart_attempts, heartbeat_interval=heartbeat_interval,
                                heartbeat_timeout=heartbeat_timeout, heartbeat_max_misses=heartbeat_max_misses,
                                start_timeout=start_timeout, circuit_reset_timeout=circuit_reset_timeout,
                                on_output=on_output, client_name=client_name, limits=limits, metrics=metrics)
        return cls(SpawnTarget(script, executable, args, env, cwd, transport), options)

    @classmethod
    def connect(cls, service_id: str, timeout: float = 5.0, *, registry: Registry | None = None,
                default_timeout: float | None = None, heartbeat_interval: float = 5.0,
                heartbeat_timeout: float = 3.0, heartbeat_max_misses: int = 3,
                circuit_reset_timeout: float = 10.0, on_output: Callable[[str, str], None] | None = None,
                client_name: str | None = None, limits: Limits | None = None,
                metrics: bool = True, instance: str | None = None,
                curve_secret_key: str | os.PathLike[str] | None = None,
                curve_server_key: str | bytes | os.PathLike[str] | None = None) -> "ParentWorker":
        """A running service registered as ``service_id``; ``timeout`` bounds discovery.

        ``registry``: a Registry or its name (a path, ``redis://...``); ``instance`` pins one
        instance; ``curve_secret_key`` / ``curve_server_key``: CURVE (see targets.ConnectTarget).
        """
        options = WorkerOptions(default_timeout=default_timeout, heartbeat_interval=heartbeat_interval,
                                heartbeat_timeout=heartbeat_timeout, heartbeat_max_misses=heartbeat_max_misses,
                                start_timeout=timeout, circuit_reset_timeout=circuit_reset_timeout,
                                on_output=on_output, client_name=client_name, limits=limits, metrics=metrics)
        return cls(ConnectTarget(service_id, timeout, registry, instance=instance,
                                 curve_secret_key=curve_secret_key, curve_server_key=curve_server_key), options)

    @classmethod
    def inprocess(cls, worker: ChildWorker, transport: str = "memory", *, default_timeout: float | None = None,
                  heartbeat_interval: float = 0.0, on_output: Callable[[str, str], None] | None = None,
                  limits: Limits | None = None, metrics: bool = True) -> "ParentWorker":
        """``worker`` (a ChildWorker object) served in this process: for unit tests of workers."""
        options = WorkerOptions(default_timeout=default_timeout, heartbeat_interval=heartbeat_interval,
                                on_output=on_output, limits=limits, metrics=metrics)
        return cls(InprocessTarget(worker, transport), options)


    # -- properties ------------------------------------------------------------------------

    @property
    def options(self) -> WorkerOptions:
        """The settings this worker was made with (frozen)."""
        return self._options

    @property
    def pid(self) -> int | None:
        """The child's process id (spawn mode), else None."""
        process = self._driver.process if self._driver is not None else None
        return process.pid if process is not None else None

    @property
    def endpoint(self) -> str | None:
        """The endpoint the parent end is bound or connected to."""
        channel = self._channel
        return channel.end.endpoint if channel is not None else None

    @property
    def is_healthy(self) -> bool:
        """Started, running, answering heartbeats, and the circuit is closed."""
        return self._core.is_healthy(time.monotonic())

    @property
    def circuit_state(self) -> str:
        """``"closed"``, ``"open"`` (calls fail at once) or ``"half_open"`` (the next call is the trial)."""
        return self._core.circuit_state(time.monotonic())

    @property
    def circuit_open(self) -> bool:
        """True while the circuit breaker fails calls at once (open or half-open)."""
        return self.circuit_state != "closed"

    @property
    def last_heartbeat_rtt_ms(self) -> float | None:
        return self.metrics.heartbeat_rtt_last_ms

    def __repr__(self) -> str:
        return f"<ParentWorker {self._target.describe()} mode={self._mode} healthy={self.is_healthy}>"

    # -- sync API --------------------------------------------------------------------------

    def start(self) -> "ParentWorker":
        """Start (or connect to) the worker; returns once it answers. Raises WorkerStartError."""
        self._claim("sync")
        self._live_key = exit_hooks.track(self)
        self._driver = self._sync = SyncDriver(self)
        try:
            error = self._sync.start()
        except BaseException:
            self.close()
            raise
        if error is not None:
            self.close()
            raise error
        return self

    def call_function(self, function: str, args: Iterable[Any] = (), timeout: float | None = _UNSET,
                      namespace: str | None = None) -> Any:
        """Call ``function(*args)`` in the worker and return its result (sync API)."""
        if tracing.ENABLED and tracing.recording():  # issue 15: a CLIENT span, whose traceparent the CALL carries
            with tracing.client_call(function):
                return self._call_function(function, args, timeout, namespace, tracing.current_traceparent())
        return self._call_function(function, args, timeout, namespace)

    def _call_function(self, function: str, args: Iterable[Any], timeout: Any, namespace: str | None,
                       traceparent: str | None = None) -> Any:
        if self._mode != "sync":
            self._wrong_mode("call", "start()")
        msg_id, payload, timeout, permit = self._prepare(function, args, timeout, namespace, traceparent=traceparent)
        started = time.perf_counter()
        self.metrics.call_started()
        driver = self._sync
        try:
            channel = driver.channel
            if channel is None or not driver.ready.is_set():
                channel, timeout = driver.wait_ready(timeout, permit)
            reply = channel.request(msg_id, payload, timeout, self._what(function))
        except BaseException as exc:
            self._failed(exc, started, permit, msg_id, function)
            self._abandoned(msg_id, exc)
            raise
        return self._finish(reply, started, permit, function)

    def stream_function(self, function: str, args: Iterable[Any] = (), timeout: float | None = _UNSET,
                        namespace: str | None = None, window: int = extensions.DEFAULT_WINDOW) -> SyncStream:
        """Iterate over the items of generator method ``function(*args)`` as the worker yields them
        (sync API); ``timeout`` bounds the wait for each item, ``window`` how far the worker runs ahead."""
        if self._mode != "sync":
            self._wrong_mode("stream", "start()")
        return SyncStream(self, function, args, timeout, namespace, window)

    def ping(self, timeout: float | None = None) -> float:
        """One heartbeat round trip, in milliseconds."""
        if self._mode != "sync":
            self._wrong_mode("ping", "start()")
        timeout = self._ping_timeout(timeout)
        channel, generation = self._sync.ping_target()
        msg_id, payload = self._sync.heartbeat()
        reply = channel.request(msg_id, payload, timeout, f"heartbeat to {self._target.describe()}")
        return self._sync.echoed(generation, None, reply)

    def restart(self) -> None:
        """Stop the child and start it again (spawn mode); closes the circuit.

        Raises WorkerStartError (and leaves the worker down) when the new child does not start.
        """
        if self._mode != "sync":
            self._wrong_mode("restart", "start()")
        error = self._sync.feed(lc.RestartRequested())
        if error is not None:
            raise error

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop heartbeats, shut the child down (spawn) and release everything; idempotent.

        The child gets SHUTDOWN, then SIGTERM after ``grace`` seconds, then SIGKILL (with every
        process of its session) after ``grace`` more: at most about 2 x ``grace`` in all.
        """
        _check_grace(grace)
        if self._mode == _FORKED:
            return self._forget()
        if self._mode == "async":
            raise RuntimeError("this worker was started with astart(); close it with await aclose()")
        if self._core.state == lc.CLOSED or self._sync is None:
            return
        self._sync.close(grace)
        exit_hooks.untrack(self._live_key)

    def __enter__(self) -> "ParentWorker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- async API -------------------------------------------------------------------------

    async def astart(self) -> "ParentWorker":
        """Start (or connect to) the worker on the running loop; returns once it answers."""
        self._claim("async")
        self._live_key = exit_hooks.track(self)
        self._driver = self._async = AsyncDriver(self)
        try:
            error = await self._async.start()
        except BaseException:
            await self.aclose()
            raise
        if error is not None:
            await self.aclose()
            raise error
        return self

    def acall_function(self, function: str, args: Iterable[Any] = (), timeout: float | None = _UNSET,
                       namespace: str | None = None) -> Coroutine[Any, Any, Any]:
        """Call ``function(*args)`` in the worker and return its result (async API): await what it returns.
        (It returns the call's coroutine itself: no coroutine of its own on a pipelined call's path.)"""
        if tracing.ENABLED and tracing.recording():
            return self._acall_traced(function, args, timeout, namespace)
        return self._acall_function(function, args, timeout, namespace)

    async def _acall_traced(self, function: str, args: Iterable[Any], timeout: Any, namespace: str | None) -> Any:
        with tracing.client_call(function):  # issue 15: a CLIENT span, whose traceparent the CALL carries
            return await self._acall_function(function, args, timeout, namespace, tracing.current_traceparent())

    async def _acall_function(self, function: str, args: Iterable[Any], timeout: Any, namespace: str | None,
                              traceparent: str | None = None) -> Any:
        if self._mode != "async":
            self._wrong_mode("acall", "astart()")
        msg_id, payload, timeout, permit = self._prepare(function, args, timeout, namespace, traceparent=traceparent)
        started = time.perf_counter()
        self.metrics.call_started()
        driver = self._async
        try:
            channel = driver.channel
            if channel is None or not driver.ready.is_set():
                channel, timeout = await driver.wait_ready(timeout, permit)
            # what the call is, for its timeout's message only: not built for a call without one
            reply = await channel.request(msg_id, payload, timeout, "" if timeout is None else self._what(function))
        except BaseException as exc:
            self._failed(exc, started, permit, msg_id, function)
            self._abandoned(msg_id, exc)
            raise
        return self._finish(reply, started, permit, function)

    def astream_function(self, function: str, args: Iterable[Any] = (), timeout: float | None = _UNSET,
                         namespace: str | None = None, window: int = extensions.DEFAULT_WINDOW) -> AsyncStream:
        """``stream_function`` for the async API: an async iterator (and async context manager)."""
        if self._mode != "async":
            self._wrong_mode("astream", "astart()")
        return AsyncStream(self, function, args, timeout, namespace, window)

    async def aping(self, timeout: float | None = None) -> float:
        """One heartbeat round trip, in milliseconds."""
        if self._mode != "async":
            self._wrong_mode("aping", "astart()")
        timeout = self._ping_timeout(timeout)
        channel, generation = self._async.ping_target()
        msg_id, payload = self._async.heartbeat()
        reply = await channel.request(msg_id, payload, timeout, f"heartbeat to {self._target.describe()}")
        return self._async.echoed(generation, None, reply)

    async def arestart(self) -> None:
        """Stop the child and start it again (spawn mode); closes the circuit.

        Raises WorkerStartError (and leaves the worker down) when the new child does not start.
        """
        if self._mode != "async":
            self._wrong_mode("arestart", "astart()")
        error = await self._async.feed(lc.RestartRequested())
        if error is not None:
            raise error

    async def aclose(self, grace: float = CLOSE_GRACE) -> None:
        """Stop heartbeats, shut the child down (spawn) and release everything; idempotent.

        ``grace`` as for ``close()``.
        """
        _check_grace(grace)
        if self._mode == _FORKED:
            return self._forget()
        if self._mode == "sync":
            raise RuntimeError("this worker was started with start(); close it with close()")
        if self._core.state == lc.CLOSED or self._async is None:
            return
        await self._async.close(grace)
        exit_hooks.untrack(self._live_key)

    async def __aenter__(self) -> "ParentWorker":
        return await self.astart()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- both ------------------------------------------------------------------------------

    def _exit_now(self) -> ChildProcess | None:
        """This process is exiting (signal, atexit): never restart; the child to stop, if any."""
        with self._lock:
            actions = self._core.handle(lc.Exiting(), time.monotonic())
        if self._async is not None:  # (maybe from a signal handler: the loop carries them out, if it runs)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits on it
                self._async.loop.call_soon_threadsafe(self._async.carry_out, actions)
        elif self._sync is not None:
            self._sync.carry_out(actions)
        return self._driver.process if self._driver is not None else None

    def _forked(self) -> None:
        """This process is a fork of the one that started the worker (exit_hooks calls this in
        the new process): the child, sockets and threads are that process's; using them here
        would steal its replies or spin, so every use raises instead."""
        self._mode = _FORKED

    def _forget(self) -> None:
        """close()/aclose() in a forked process: drop the inherited references, stop nothing."""
        self._driver = None

    def _claim(self, mode: str) -> None:
        if self._mode is not None:
            raise RuntimeError(f"this worker was already started ({self._mode} API); a ParentWorker starts once")
        self._mode = mode
        self._owner_pid = os.getpid()

    def _wrong_mode(self, what: str, starter: str) -> None:
        if self._mode == _FORKED:
            raise MultifrostError(f"{what}: this worker was started in process {self._owner_pid} and this is a "
                                  f"forked process ({os.getpid()}); a worker cannot be used across fork(): "
                                  f"start a new worker in this process")
        if self._mode is None:
            raise RuntimeError(f"the worker is not started: call {starter} (or use it as a context manager) first")
        other = "start()" if self._mode == "sync" else "astart()"
        raise RuntimeError(f"{what}: this worker was started with {other}; "
                           f"use {'call/call_function' if self._mode == 'sync' else 'acall/acall_function'}")


def _check_grace(grace: object) -> None:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace < float("inf"):
        raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
