"""ParentWorker: call a worker's methods as if they were local, from threads or asyncio.

A worker is started with ``start()`` (the sync API: ``w.call.add(1, 2)``) or ``astart()``
(the async API: ``await w.acall.add(1, 2)``). The sync API does its socket I/O in the
calling thread (channel.SyncChannel) and keeps one supervisor thread for heartbeats,
output and crash handling; the async API does everything on the caller's event loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import exit_hooks, extensions, protocol, tracing, wire
from .channel import AsyncChannel, SignallingWaiter, SyncChannel, _read_all
from .circuit import CLOSED, CircuitBreaker
from .heartbeats import Heartbeats
from .codec import Limits, pack_message
from .errors import (CallTimeoutError, CircuitOpenError, MultifrostError, RemoteCallError,
                     TransportClosed, TransportError, WorkerCrashedError, WorkerStartError)
from .logs import ContextLogger, bind
from .metrics import Metrics, NullMetrics
from .options import WorkerOptions
from .process import ChildProcess
from .proxy import STREAM_OPTIONS, CallProxy
from .streams import AsyncStream, SyncStream
from .target import Target
from .targets import ConnectTarget, InprocessTarget, SpawnTarget
from .timeouts import check_timeout
from .transports import DEFAULT_MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from .child import ChildWorker
    from .registry import Registry


log = logging.getLogger(__name__)
output_log = logging.getLogger("multifrost.child_output")

_UNSET: Any = object()
_FORKED = "forked"  # the mode of a worker inherited through fork(): unusable in this process
_START_PROBE = 0.25  # seconds between readiness heartbeats while a worker starts
_LAST_WORDS = 0.05  # seconds a dead child's last replies get to arrive before its calls fail
_DROP_WAIT = 1.0  # seconds a spawned child whose connection dropped gets to be seen exiting (a crash)
CLOSE_GRACE = 1.0  # default seconds a child gets to exit after SHUTDOWN, and again after SIGTERM
_BACKOFF_START, _BACKOFF_CAP = 0.1, 5.0




class ParentWorker:
    """A handle on one worker. Build it with ``spawn``, ``connect`` or ``inprocess``; those do no I/O."""

    def __init__(self, target: Target, options: WorkerOptions) -> None:
        self._target = target
        self._options = options
        self._mode: str | None = None
        self._owner_pid: int | None = None  # the process that started the worker
        self._closing = False
        # a SyncChannel in sync mode, an AsyncChannel in async mode; None while down or closed
        self._channel: Any = None
        self._process: ChildProcess | None = None
        self._down: MultifrostError | None = None  # why the worker is not running, when it is not
        # Failures in a row that open the circuit: with auto_restart, a crash and then
        # max_restart_attempts failed restarts (or restarted children that die before answering).
        threshold = max(1, options.max_restart_attempts) + (1 if options.auto_restart else 0)
        self._breaker = CircuitBreaker(threshold, options.circuit_reset_timeout)
        self._beats = Heartbeats(options.heartbeat_interval, options.heartbeat_timeout,
                                 options.heartbeat_max_misses, time.monotonic())
        self._healthy = False
        self.metrics = Metrics() if options.metrics else NullMetrics()
        self._log = bind(log, worker_id=target.name, service_id=target.service_id)
        self._restart_requested = False
        self._drop_due: float | None = None  # sync API: when to look into a dropped connection ...
        self._dropped: SyncChannel | None = None  # ... and the channel whose connection it was
        self._moved = False  # (connect mode) the lease watch found the instance gone
        self._restarting = False
        self._exiting = False  # this process is exiting (signal, atexit): never restart the child
        self._live_key: int | None = None
        # sync API
        self._ready = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._state_lock = threading.Lock()
        # async API
        # astart() sets both; only the async API, after astart(), uses them
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._aready: asyncio.Event = None  # type: ignore[assignment]
        self._tasks: set[asyncio.Task] = set()
        self._stopping: set[asyncio.Future] = set()  # child processes being stopped by a teardown
        self.call = CallProxy(self.call_function)
        self.acall = CallProxy(self.acall_function)
        self.stream = CallProxy(self.stream_function, allowed=STREAM_OPTIONS)  # issue 15
        self.astream = CallProxy(self.astream_function, allowed=STREAM_OPTIONS)

    # -- factories -------------------------------------------------------------------------

    @classmethod
    def spawn(cls, script: str, executable: str | None = None, *, args: tuple = (), env: dict | None = None,
              cwd: str | None = None, transport: str = "tcp", default_timeout: float | None = None,
              auto_restart: bool = False, max_restart_attempts: int = 5, heartbeat_interval: float = 5.0,
              heartbeat_timeout: float = 3.0, heartbeat_max_misses: int = 3, start_timeout: float = 10.0,
              circuit_reset_timeout: float = 10.0, on_output: Callable[[str, str], None] | None = None,
              client_name: str | None = None, limits: Limits | None = None,
              metrics: bool = True) -> "ParentWorker":
        """A worker process running ``script`` (with ``executable``, default this Python)."""
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
        return self._process.pid if self._process is not None else None

    @property
    def endpoint(self) -> str | None:
        """The endpoint the parent end is bound or connected to."""
        return self._channel.end.endpoint if self._channel is not None else None

    @property
    def is_healthy(self) -> bool:
        """Started, running, answering heartbeats, and the circuit is closed."""
        return (self._healthy and self._down is None and not self._closing
                and self._breaker.state == "closed")

    @property
    def circuit_state(self) -> str:
        """``"closed"``, ``"open"`` (calls fail at once) or ``"half_open"`` (the next call is the trial)."""
        return self._breaker.state

    @property
    def circuit_open(self) -> bool:
        """True while the circuit breaker fails calls at once (open or half-open)."""
        return self._breaker.state != "closed"

    @property
    def last_heartbeat_rtt_ms(self) -> float | None:
        return self.metrics.heartbeat_rtt_last_ms

    def __repr__(self) -> str:
        return f"<ParentWorker {self._target.describe()} mode={self._mode} healthy={self.is_healthy}>"

    # -- calls (shared) --------------------------------------------------------------------

    def _prepare(self, function: str, args, timeout, namespace, window: int | None = None,
                 traceparent: str | None = None) -> tuple[str, bytes, float | None, str]:
        """Check the circuit and build the CALL; PayloadError here means nothing was sent."""
        if not isinstance(function, str):
            raise TypeError(f"function name must be str, not {type(function).__name__}")
        if timeout is _UNSET:
            timeout = self._options.default_timeout
        else:
            timeout = check_timeout(timeout)
        permit = self._breaker.allow()
        if permit is None:
            raise CircuitOpenError(f"circuit breaker open for {self._target.describe()}: "
                                   f"calls fail at once until the reset timeout passes or restart() is called")
        message = protocol.call(function, list(args), namespace or protocol.DEFAULT_NAMESPACE,
                                self._options.client_name)
        channel = self._channel  # issue 15 hook: extension data only for a worker that agreed to it
        if channel is not None and channel.extensions:
            if traceparent is None and tracing.ENABLED and tracing.recording():
                traceparent = tracing.current_traceparent()
            extras = extensions.call_extras(channel.extensions, None if window else timeout, traceparent, window)
            message["metadata"] = {extensions.CALL_KEY: extras}
        try:
            payload = protocol.check_size(pack_message(message, limits=self._options.limits),
                                          DEFAULT_MAX_MESSAGE_SIZE)
        except BaseException:
            if permit == "trial":
                self._breaker.end_trial()
            raise
        return message["id"], payload, timeout, permit

    def _finish(self, reply: protocol.Message, started: float, permit: str, function: str = "") -> Any:
        elapsed = time.perf_counter() - started
        outcome = "ok" if reply.type == protocol.RESPONSE else "error"
        self.metrics.call_finished(elapsed, outcome)
        if log.isEnabledFor(logging.DEBUG):
            self._call_record(reply.id, function, elapsed, outcome)
        if permit == "trial" or self._breaker.failures:
            self._breaker.record_success()
        if reply.type == protocol.RESPONSE:
            return reply.result
        if reply.type == protocol.ERROR:
            if reply.error.startswith(extensions.DEADLINE_ERROR):  # issue 15: the worker saw the deadline first
                raise CallTimeoutError(f"{reply.error.partition(chr(10))[0]} (the call's timeout)")
            raise RemoteCallError.from_wire(reply.error)
        raise RemoteCallError(f"the worker answered a call with a {reply.type} message")

    def _failed(self, exc: BaseException, started: float, permit: str, msg_id: str = "", function: str = "") -> None:
        elapsed = time.perf_counter() - started
        outcome = "timeout" if isinstance(exc, CallTimeoutError) else "error"
        self.metrics.call_finished(elapsed, outcome)
        if log.isEnabledFor(logging.DEBUG):
            self._call_record(msg_id, function, elapsed, f"{outcome} ({type(exc).__name__})")
        if permit == "trial":
            if isinstance(exc, (WorkerCrashedError, WorkerStartError)):
                self._breaker.record_failure()
            else:
                self._breaker.end_trial()

    def _wire_log(self, process: ChildProcess | None) -> ContextLogger:
        """``multifrost.wire`` with this worker's context, for a channel to ``process`` (None: not spawned)."""
        return bind(wire.log, worker_id=self._target.name, service_id=self._target.service_id,
                    pid=None if process is None else process.pid)

    def _call_record(self, msg_id: str | None, function: str, elapsed: float, outcome: str) -> None:
        """The per-call DEBUG record, with ``request_id``, ``function`` and ``duration_ms`` in ``extra``."""
        duration_ms = round(elapsed * 1000.0, 3)
        self._log.debug("%s(): %s in %.3f ms", function, outcome, duration_ms,
                        extra={"request_id": msg_id, "function": function, "duration_ms": duration_ms})

    def _abandoned(self, msg_id: str, exc: BaseException) -> None:
        """issue 15 hook: the caller stopped waiting (timeout, cancelled task): tell a worker that speaks 'cancel'."""
        channel = self._channel
        if (isinstance(exc, (CallTimeoutError, asyncio.CancelledError, KeyboardInterrupt)) and channel is not None
                and extensions.CANCEL in channel.extensions):
            try:
                channel.post(pack_message(extensions.cancel(msg_id)))
            except MultifrostError:
                pass

    def _note_extensions(self, reply: protocol.Message, channel=None) -> None:
        """issue 15 hook: a heartbeat echo that carries the worker's announcement sets what the channel may use."""
        agreed = extensions.negotiate(reply.metadata)
        channel = channel or self._channel
        if agreed is not None and channel is not None:
            channel.extensions = agreed

    def _what(self, function: str) -> str:
        return f"call {function}() to {self._target.describe()}"

    def _ping_channel(self, timeout: float | None) -> tuple[Any, float]:
        """The channel a ping goes out on and its timeout (default ``heartbeat_timeout``);
        TransportClosed after close(), the crash (WorkerCrashedError) while the worker is down."""
        timeout = check_timeout(timeout)
        channel = self._channel
        if self._closing or channel is None:
            if self._closing or self._down is None:
                raise TransportClosed(f"{self._target.describe()} was closed")
            raise self._down
        return channel, self._options.heartbeat_timeout if timeout is None else timeout

    # -- sync API --------------------------------------------------------------------------

    def start(self) -> "ParentWorker":
        """Start (or connect to) the worker; returns once it answers. Raises WorkerStartError."""
        self._claim("sync")
        self._live_key = exit_hooks.track(self)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        try:
            self._establish()
        except BaseException:
            self.close()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="multifrost-supervisor", daemon=True)
        self._supervisor.start()
        self._target.watch(self._lease_lost)
        return self

    def _lease_lost(self) -> None:
        """(lease watch thread) The service instance in use left the registry: wake the supervisor."""
        self._moved = True
        os.write(self._wake_w, b"m")

    def call_function(self, function: str, args: Iterable[Any] = (), timeout: float | None = _UNSET,
                      namespace: str | None = None) -> Any:
        """Call ``function(*args)`` in the worker and return its result (sync API)."""
        if tracing.ENABLED and tracing.recording():  # issue 15: a CLIENT span; _prepare sends its traceparent
            with tracing.client_call(function):
                return self._call_function(function, args, timeout, namespace)
        return self._call_function(function, args, timeout, namespace)

    def _call_function(self, function: str, args, timeout, namespace) -> Any:
        if self._mode != "sync":
            self._wrong_mode("call", "start()")
        msg_id, payload, timeout, permit = self._prepare(function, args, timeout, namespace)
        started = time.perf_counter()
        self.metrics.call_started()
        try:
            channel = self._channel
            if channel is None or not self._ready.is_set():
                channel, timeout = self._wait_ready(timeout, permit)
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
        channel, timeout = self._ping_channel(timeout)
        message = protocol.heartbeat()
        reply = channel.request(message["id"], pack_message(message), timeout,
                                f"heartbeat to {self._target.describe()}")
        return self._heartbeat_rtt(reply)

    def restart(self) -> None:
        """Stop the child and start it again (spawn mode); closes the circuit.

        Raises WorkerStartError (and leaves the worker down) when the new child does not start.
        """
        if self._mode != "sync":
            self._wrong_mode("restart", "start()")
        if self._closing:
            raise TransportClosed(f"{self._target.describe()} was closed")
        self._breaker.reset()
        self.metrics.circuit_state = self._breaker.state
        with self._state_lock:
            self._ready.clear()
            self._teardown(WorkerCrashedError(f"{self._target.describe()} is being restarted"))
            try:
                self._establish()
            except BaseException as exc:
                self._down = exc if isinstance(exc, MultifrostError) else WorkerStartError(str(exc))
                self._healthy = False
                self._teardown(self._down)
                raise

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
        if self._closing:
            return
        self._closing = True
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        with self._state_lock:
            self._teardown(TransportClosed(f"{self._target.describe()} was closed"), shutdown=True, grace=grace)
            self._target.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._ready.clear()
        exit_hooks.untrack(self._live_key)

    def __enter__(self) -> "ParentWorker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _exit_now(self) -> ChildProcess | None:
        """This process is exiting (signal, atexit): never restart; the child to stop, if any."""
        self._exiting = True
        return self._process

    def _forked(self) -> None:
        """This process is a fork of the one that started the worker (exit_hooks calls this in
        the new process): the child, sockets and threads are that process's; using them here
        would steal its replies or spin, so every use raises instead."""
        self._mode = _FORKED

    def _forget(self) -> None:
        """close()/aclose() in a forked process: drop the inherited references, stop nothing."""
        self._closing = True
        self._channel = self._process = self._supervisor = None

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

    def _establish(self) -> None:
        """Open the end (spawning or discovering), then wait until the worker echoes a heartbeat."""
        end, process = self._target.open()
        channel = SyncChannel(end, self._on_output, self._options.limits)
        channel.on_drop = lambda: self._on_drop(channel)
        channel.wire = self._wire_log(process)
        self._channel, self._process = channel, process
        deadline = time.monotonic() + self._options.start_timeout
        while True:
            message = protocol.heartbeat()
            try:
                reply = channel.request(message["id"], pack_message(message),
                                        min(_START_PROBE, max(0.0, deadline - time.monotonic())), "start")
                self._note_extensions(reply, channel)  # issue 15
                break
            except CallTimeoutError:
                self._check_start(deadline)
        self._up()
        self._ready.set()

    def _check_start(self, deadline: float) -> None:
        self._channel.end.check()  # a refused security handshake: AuthenticationError now, not a timeout
        process = self._process
        if process is not None:
            process.read_stderr()
            if process.returncode is not None:
                raise WorkerStartError(f"{self._target.describe()} {process.describe_exit()} before it connected",
                                       exit_code=process.returncode, stderr_tail=process.stderr_tail())
        if time.monotonic() >= deadline:
            tail = process.stderr_tail() if process is not None else ""
            raise WorkerStartError(f"{self._target.describe()} did not answer within "
                                   f"start_timeout={self._options.start_timeout} s", stderr_tail=tail)

    def _up(self) -> None:
        """The worker answered its start heartbeat. The breaker's run of failures goes on until
        a call or a heartbeat is answered, so that a child that dies soon after every start
        still opens the circuit instead of being restarted forever."""
        self._down = None
        self._healthy = True
        self._beats.restart(time.monotonic())
        self.metrics.circuit_state = self._breaker.state

    def _wait_ready(self, timeout: float | None, permit: str) -> tuple[SyncChannel, float | None]:
        """The worker is down or restarting: wait for it within the call's timeout.

        Returns the channel to use and what is left of the timeout.
        """
        if permit == "trial" and self._down is not None and not self._closing:
            self._restart_requested = self._restarting = True
            os.write(self._wake_w, b"x")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            channel = self._channel
            if channel is not None and self._ready.is_set():
                return channel, None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._closing or (self._down is not None and not self._restarting):
                raise self._down or TransportClosed(f"{self._target.describe()} was closed")
            if deadline is not None and time.monotonic() >= deadline:
                raise CallTimeoutError(f"{self._target.describe()} did not come back within the timeout")
            self._ready.wait(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))

    def _detach(self, reason: MultifrostError, shutdown: bool = False) -> tuple:
        """Both APIs' first step of a teardown: forget the channel and the process (``pid`` is
        None from here), then fail the calls in flight with ``reason``; returns the two."""
        channel, process = self._channel, self._process
        self._channel = self._process = None
        if channel is not None:
            if shutdown and process is not None:
                channel.end.send_nowait(pack_message(protocol.shutdown()))
            channel.fail_all(reason, final=True)
        return channel, process

    def _teardown(self, reason: MultifrostError, shutdown: bool = False, grace: float = CLOSE_GRACE) -> None:
        """Fail calls in flight with ``reason`` and release the channel and the process."""
        channel, process = self._detach(reason, shutdown)
        if process is not None:
            _stop_process(process, shutdown, grace)
        if channel is not None:
            channel.close()
            channel.end.close()

    def _supervise(self) -> None:
        """The sync API's one background thread: output, crashes, restarts, heartbeats."""
        beat = _HeartbeatClock(self)
        while not self._closing:
            process = self._process
            fds = [self._wake_r] + ([process.exit_fd, process.stderr_fd] if process is not None else [])
            channel = self._channel
            try:
                if channel is not None:
                    wait = beat.wait() if self._drop_due is None else min(beat.wait(), self._drop_due - time.monotonic())
                    ready = channel.poll_idle(max(0.0, wait), fds)
                else:
                    ready = {self._wake_r} if _sleep_on(self._wake_r, 1.0) else set()
            except (OSError, ValueError, MultifrostError):
                ready = set()  # the channel was replaced or closed under us; look again
            if self._closing:
                return
            if self._wake_r in ready:
                _read_all(self._wake_r)
            if self._moved:
                self._moved = False
                if self._down is None:
                    self._reconnect_if_moved()
            if process is not None and process is self._process:
                if process.stderr_fd in ready:
                    process.read_stderr()
                if process.exit_fd in ready:
                    self._drain_last_words(channel)
                    self._on_exit(process)
            if self._drop_due is not None and time.monotonic() >= self._drop_due:
                dropped, self._drop_due, self._dropped = self._dropped, None, None
                if dropped is not None:
                    self._after_drop(dropped)  # nothing, if a restart replaced that channel meanwhile
            if self._restart_requested:
                self._restart_requested = False
                self._restart_loop(attempts=1)
            if channel is not None and channel is self._channel and self._down is None:
                beat.tick(self, channel)

    def _on_drop(self, channel: SyncChannel) -> None:
        """``channel`` saw its connection dropped (any thread): the supervisor looks into it."""
        self._dropped = channel
        self._drop_due = time.monotonic() + self._drop_wait()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")

    def _drain_last_words(self, channel: SyncChannel) -> None:
        """The child exited: replies it sent just before may still be on their way through
        ZeroMQ's I/O thread; hand out what arrives within ``_LAST_WORDS`` seconds."""
        deadline = time.monotonic() + _LAST_WORDS
        while (remaining := deadline - time.monotonic()) > 0:
            channel.poll_idle(remaining, [])
        channel.drain()

    def _on_exit(self, process: ChildProcess) -> None:
        """The child exited on its own: fail calls in flight now, then restart if asked to."""
        error = self._crash_error(process)
        with self._state_lock:
            if process is not self._process:
                return  # a restart() replaced it meanwhile
            self._log.warning("%s", error, extra={"pid": process.pid, "exit_code": process.returncode})
            self._ready.clear()
            restart = self._crashed(error)
            self._teardown(error)
        if restart:
            self._restart_loop(self._options.max_restart_attempts)

    def _crash_error(self, process: ChildProcess) -> WorkerCrashedError:
        return WorkerCrashedError(f"{self._target.describe()} {process.describe_exit()}; calls in flight failed",
                                  exit_code=process.returncode, stderr_tail=process.stderr_tail())

    def _crashed(self, error: WorkerCrashedError) -> bool:
        """Record a crash (one failure for the breaker); returns whether to restart the child."""
        self._down = error
        self._healthy = False
        self._breaker.record_failure()
        self.metrics.circuit_state = self._breaker.state
        self._restarting = (self._options.auto_restart and not self._closing and not self._exiting
                            and self._breaker.state == CLOSED)
        if self._options.auto_restart and not self._restarting and not self._closing:
            self._log.warning("%s: not restarting it, the circuit breaker is open", self._target.describe())
        return self._restarting

    def _reconnect_if_moved(self) -> None:
        """Connect mode: the service stopped answering; if it is gone or moved, find it again."""
        try:
            moved = self._target.moved()
        except MultifrostError as exc:
            self._log.warning("cannot read the registry: %s", exc)
            moved = False
        if not moved:
            if self._channel is not None and self._down is None:
                self._release_calls()  # still registered there: calls go on to it
            return
        error = WorkerCrashedError(f"{self._target.describe()} went away; calls in flight failed, reconnecting")
        self._log.warning("%s", error)
        with self._state_lock:
            self._ready.clear()
            self._restarting = True
            self._down = error
            self._healthy = False
            self._teardown(error)
        self._restart_loop(self._options.max_restart_attempts)

    def _restart_loop(self, attempts: int) -> None:
        """Start the child again, backing off exponentially; after ``attempts`` failed starts
        in a row the circuit opens (and calls waiting for the worker fail at once)."""
        self._restarting = True
        try:
            self._restart_attempts(attempts)
        finally:
            self._restarting = False

    def _restart_attempts(self, attempts: int) -> None:
        for delay in _backoff_delays(attempts):
            if not self._backoff(delay):
                return
            try:
                with self._state_lock:
                    if self._closing or self._exiting or self._down is None:
                        return  # closed, or a restart() brought the worker back meanwhile
                    self._establish()
                self.metrics.restarts += 1
                self._log.info("%s restarted", self._target.describe(), extra={"pid": self.pid})
                return
            except MultifrostError as exc:  # a failed start, or (connect mode) the service not found
                self._log.warning("restart of %s failed: %s", self._target.describe(), exc)
                with self._state_lock:
                    self._down = exc
                    self._teardown(exc)
                if self._restart_failed():
                    break
        self._gave_up(attempts)

    def _restart_failed(self) -> bool:
        """Count a failed restart; True when the circuit opened (stop trying)."""
        self._breaker.record_failure()
        self.metrics.circuit_state = self._breaker.state
        return self._breaker.state != CLOSED

    def _gave_up(self, attempts: int) -> None:
        self._log.warning("%s: restarts failed (up to %d in a row); the circuit breaker opens",
                    self._target.describe(), attempts)
        self._breaker.trip()
        self.metrics.circuit_state = self._breaker.state

    def _backoff(self, delay: float) -> bool:
        """Sleep ``delay`` s unless the worker is closed meanwhile; False when it was."""
        deadline = time.monotonic() + delay
        while not (self._closing or self._exiting):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if _sleep_on(self._wake_r, remaining):
                _read_all(self._wake_r)
        return False

    # -- async API -------------------------------------------------------------------------

    async def astart(self) -> "ParentWorker":
        """Start (or connect to) the worker on the running loop; returns once it answers."""
        self._claim("async")
        self._live_key = exit_hooks.track(self)
        self._loop = asyncio.get_running_loop()
        self._aready = asyncio.Event()
        try:
            await self._aestablish()
        except BaseException:
            await self.aclose()
            raise
        if self._options.heartbeat_interval > 0:
            self._spawn_task(self._aheartbeats())
        loop = self._loop

        def lease_lost() -> None:  # (lease watch thread)
            loop.call_soon_threadsafe(self._alease_lost)
        self._target.watch(lease_lost)
        return self

    def _alease_lost(self) -> None:
        """The service instance in use left the registry: move to another one."""
        if self._down is None and not self._closing and self._channel is not None:
            self._spawn_task(self._areconnect_if_moved(self._channel))

    async def acall_function(self, function: str, args: Iterable[Any] = (), timeout: float | None = _UNSET,
                             namespace: str | None = None) -> Any:
        """Call ``function(*args)`` in the worker and return its result (async API)."""
        if tracing.ENABLED and tracing.recording():  # issue 15: a CLIENT span; _prepare sends its traceparent
            with tracing.client_call(function):
                return await self._acall_function(function, args, timeout, namespace)
        return await self._acall_function(function, args, timeout, namespace)

    async def _acall_function(self, function: str, args, timeout, namespace) -> Any:
        if self._mode != "async":
            self._wrong_mode("acall", "astart()")
        msg_id, payload, timeout, permit = self._prepare(function, args, timeout, namespace)
        started = time.perf_counter()
        self.metrics.call_started()
        try:
            if not self._aready.is_set():
                timeout = await self._await_ready(timeout, permit)
            reply = await self._channel.request(msg_id, payload, timeout, self._what(function))
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
        channel, timeout = self._ping_channel(timeout)
        message = protocol.heartbeat()
        reply = await channel.request(message["id"], pack_message(message), timeout,
                                      f"heartbeat to {self._target.describe()}")
        return self._heartbeat_rtt(reply)

    async def arestart(self) -> None:
        """Stop the child and start it again (spawn mode); closes the circuit.

        Raises WorkerStartError (and leaves the worker down) when the new child does not start.
        """
        if self._mode != "async":
            self._wrong_mode("arestart", "astart()")
        if self._closing:
            raise TransportClosed(f"{self._target.describe()} was closed")
        self._breaker.reset()
        self.metrics.circuit_state = self._breaker.state
        self._aready.clear()
        await self._ateardown(WorkerCrashedError(f"{self._target.describe()} is being restarted"))
        try:
            await self._aestablish()
        except BaseException as exc:
            self._down = exc if isinstance(exc, MultifrostError) else WorkerStartError(str(exc))
            self._healthy = False
            await self._ateardown(self._down)
            raise

    async def aclose(self, grace: float = CLOSE_GRACE) -> None:
        """Stop heartbeats, shut the child down (spawn) and release everything; idempotent.

        ``grace`` as for ``close()``.
        """
        _check_grace(grace)
        if self._mode == _FORKED:
            return self._forget()
        if self._mode == "sync":
            raise RuntimeError("this worker was started with start(); close it with close()")
        if self._closing:
            return
        self._closing = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._ateardown(TransportClosed(f"{self._target.describe()} was closed"), shutdown=True, grace=grace)
        await asyncio.gather(*self._stopping)
        await self._target.aclose()
        if self._aready is not None:
            self._aready.clear()
        exit_hooks.untrack(self._live_key)

    async def __aenter__(self) -> "ParentWorker":
        return await self.astart()

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    def _spawn_task(self, coro) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _aestablish(self) -> None:
        end, process = await self._target.aopen()
        channel = AsyncChannel(end, self._on_output, self._options.limits)
        channel.wire = self._wire_log(process)
        channel.on_drop = lambda: self._loop.call_later(self._drop_wait(), self._after_drop, channel)
        self._channel, self._process = channel, process
        deadline = time.monotonic() + self._options.start_timeout
        while True:
            message = protocol.heartbeat()
            try:
                reply = await channel.request(message["id"], pack_message(message),
                                              min(_START_PROBE, max(0.0, deadline - time.monotonic())), "start")
                self._note_extensions(reply, channel)  # issue 15
                break
            except CallTimeoutError:
                self._check_start(deadline)
        if process is not None:
            self._loop.add_reader(process.stderr_fd, process.read_stderr)
            self._loop.add_reader(process.exit_fd, self._aon_exit, process)
        self._up()
        self._aready.set()

    async def _await_ready(self, timeout: float | None, permit: str) -> float | None:
        """The worker is down or restarting: wait for it within the call's timeout; returns what is left of it."""
        if permit == "trial" and self._down is not None and not self._closing:
            self._restarting = True
            self._spawn_task(self._arestart_loop(1))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._aready.is_set():
            if self._closing or (self._down is not None and not self._restarting):
                raise self._down or TransportClosed(f"{self._target.describe()} was closed")
            slice_ = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if slice_ <= 0:
                raise CallTimeoutError(f"{self._target.describe()} did not come back within the timeout")
            try:
                await asyncio.wait_for(self._aready.wait(), slice_)
            except asyncio.TimeoutError:
                pass
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    async def _ateardown(self, reason: MultifrostError, shutdown: bool = False, grace: float = CLOSE_GRACE) -> None:
        process = self._process
        if process is not None:
            self._loop.remove_reader(process.stderr_fd)
            self._loop.remove_reader(process.exit_fd)
        channel, process = self._detach(reason, shutdown)
        try:
            if process is not None:  # the end stays open meanwhile: SHUTDOWN must leave
                await asyncio.shield(self._astop(process, shutdown, grace))
        finally:
            if channel is not None:
                channel.close()
                channel.end.close()

    def _astop(self, process: ChildProcess, shutdown: bool = False, grace: float = CLOSE_GRACE) -> asyncio.Future:
        """Stop a detached process in a thread; aclose() waits for it even if its waiter is cancelled."""
        stopping = asyncio.ensure_future(asyncio.to_thread(_stop_process, process, shutdown, grace))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        return stopping

    def _aon_exit(self, process: ChildProcess) -> None:
        """The child exited on its own (exit fd reader): let its last replies in, then fail the rest."""
        self._loop.remove_reader(process.exit_fd)
        self._loop.remove_reader(process.stderr_fd)
        self._loop.call_later(_LAST_WORDS, self._aon_exit_drained, process)

    def _aon_exit_drained(self, process: ChildProcess) -> None:
        """Fail calls in flight, restart if asked to."""
        if process is not self._process or self._closing:
            return
        self._channel.drain()  # replies and output the child sent just before it exited
        error = self._crash_error(process)
        self._log.warning("%s", error, extra={"pid": process.pid, "exit_code": process.returncode})
        self._aready.clear()
        restart = self._crashed(error)
        channel, _ = self._detach(error)
        channel.close()  # the child is gone: nothing more can arrive
        channel.end.close()
        self._spawn_task(self._aafter_exit(self._astop(process), restart))

    async def _aafter_exit(self, stopping: asyncio.Future, restart: bool) -> None:
        await asyncio.shield(stopping)
        if restart and not self._closing:
            await self._arestart_loop(self._options.max_restart_attempts)

    async def _areconnect_if_moved(self, channel: AsyncChannel) -> None:
        """Connect mode: the service stopped answering on ``channel``; if it is gone or moved, find
        it again (once: heartbeats of a channel already replaced, or being replaced, change nothing)."""
        if channel is not self._channel or self._restarting:
            return
        try:
            moved = await asyncio.to_thread(self._target.moved)
        except MultifrostError as exc:
            self._log.warning("cannot read the registry: %s", exc)
            moved = False
        if channel is not self._channel or self._restarting:
            return
        if not moved:
            if self._down is None:
                self._release_calls()  # still registered there: calls go on to it
            return
        error = WorkerCrashedError(f"{self._target.describe()} went away; calls in flight failed, reconnecting")
        self._log.warning("%s", error)
        self._aready.clear()
        self._restarting = True
        self._down = error
        self._healthy = False
        await self._ateardown(error)
        await self._arestart_loop(self._options.max_restart_attempts)

    async def _arestart_loop(self, attempts: int) -> None:
        self._restarting = True
        try:
            await self._arestart_attempts(attempts)
        finally:
            self._restarting = False

    async def _arestart_attempts(self, attempts: int) -> None:
        for delay in _backoff_delays(attempts):
            await asyncio.sleep(delay)
            if self._closing or self._exiting or self._down is None:
                return  # closed, or an arestart() brought the worker back meanwhile
            try:
                await self._aestablish()
                self.metrics.restarts += 1
                self._log.info("%s restarted", self._target.describe(), extra={"pid": self.pid})
                return
            except MultifrostError as exc:  # a failed start, or (connect mode) the service not found
                self._log.warning("restart of %s failed: %s", self._target.describe(), exc)
                self._down = exc
                await self._ateardown(exc)
                if self._restart_failed():
                    break
        self._gave_up(attempts)

    async def _aheartbeats(self) -> None:
        beats = self._beats
        while True:
            await asyncio.sleep(max(0.0, beats.next_send - time.monotonic()))
            channel = self._channel
            if channel is None or self._down is not None:
                beats.next_send = time.monotonic() + beats.interval
                continue
            message = protocol.heartbeat()
            beats.sent(message["id"], time.monotonic())
            self._spawn_task(self._aheartbeat(channel, message))

    async def _aheartbeat(self, channel: AsyncChannel, message: dict) -> None:
        """One heartbeat: its echo, or its expiry."""
        try:
            reply = await channel.request(message["id"], pack_message(message), self._options.heartbeat_timeout,
                                          "heartbeat")
        except CallTimeoutError:
            self._heartbeat_expired(message["id"])
            if self._target.relocatable:
                await self._areconnect_if_moved(channel)
        except MultifrostError:
            return
        else:
            self._heartbeat_rtt(reply)

    # -- heartbeats and output (shared) -----------------------------------------------------

    def _drop_wait(self) -> float:
        """How long after a dropped connection its calls fail: a spawned child gets time to be
        seen exiting (then they fail as a crash, with its exit code)."""
        return _DROP_WAIT if self._process is not None else _LAST_WORDS

    def _after_drop(self, channel: SyncChannel | AsyncChannel) -> None:
        """A connection to the worker was dropped a moment ago: unless the child died (its exit
        fails the calls as a crash), fail the calls in flight now, not at their timeouts; the
        connection comes back by itself for later calls."""
        process = self._process
        if channel is not self._channel or self._closing or (process is not None and process.returncode is not None):
            return
        try:
            channel.drain()
        except MultifrostError:  # closed meanwhile
            return
        # A spawned child still running lost only its connection; a service's client cannot tell a
        # cut connection from the service going away, and fails its calls as it always has for that.
        if process is None:  # connect mode: new calls wait for the service to answer a probe, or to be found elsewhere
            self._hold_calls()  # before the calls in flight fail: their callers may call again at once
        error = TransportError if process is not None else WorkerCrashedError
        channel.fail_all(error(f"the connection to {self._target.describe()} was dropped (it went away, "
                               f"or a message over its limits cut it); calls in flight failed"))
        if process is None:
            if self._mode == "sync":  # not in the supervisor: it must stay free for the move
                threading.Thread(target=self._probe, args=(channel,), name="multifrost-probe", daemon=True).start()
            else:
                self._spawn_task(self._aprobe(channel))

    def _probe(self, channel: SyncChannel) -> None:
        """One heartbeat on ``channel`` (a thread of its own): its echo releases held calls."""
        message = protocol.heartbeat()
        try:
            self._heartbeat_rtt(channel.request(message["id"], pack_message(message),
                                                self._options.heartbeat_timeout, "probe"))
        except MultifrostError:  # no answer: heartbeats and the registry decide what comes next
            pass

    async def _aprobe(self, channel: AsyncChannel) -> None:
        message = protocol.heartbeat()
        try:
            self._heartbeat_rtt(await channel.request(message["id"], pack_message(message),
                                                      self._options.heartbeat_timeout, "probe"))
        except MultifrostError:
            pass

    def _heartbeat_rtt(self, reply: protocol.Message, arrived: float | None = None) -> float:
        """An echo came back (at ``arrived``, default now): note the RTT; the worker is healthy."""
        self._note_extensions(reply)  # issue 15
        sent = reply.hb_timestamp
        rtt = max(0.0, ((arrived or time.time()) - sent) * 1000) if sent is not None else 0.0
        self.metrics.heartbeat(rtt)
        if self._beats.echoed(reply.id):
            self._log.info("%s answers heartbeats again", self._target.describe())
        self._healthy = True
        self._breaker.record_success()
        self.metrics.circuit_state = self._breaker.state
        if self._down is None and not self._restarting and self._channel is not None:
            self._release_calls()  # an answer: calls held after a drop or silence go on
        return rtt

    def _hold_calls(self) -> None:
        """Connect mode, the service may be gone: new calls wait (within their timeouts) for a
        heartbeat echo, or for the move to another instance, instead of being sent into the void."""
        (self._ready if self._mode == "sync" else self._aready).clear()

    def _release_calls(self) -> None:
        (self._ready if self._mode == "sync" else self._aready).set()

    def _heartbeat_expired(self, msg_id: str) -> None:
        if self._beats.expired(msg_id):
            self._log.warning("%s left %d heartbeats in a row unanswered: unhealthy", self._target.describe(),
                              self._beats.unanswered)
            if self._target.relocatable:
                # New calls wait for the registry's verdict instead of going to a service that may be gone.
                self._hold_calls()
            self._healthy = False
            self._breaker.record_failure()
            self.metrics.circuit_state = self._breaker.state

    def _on_output(self, message: protocol.Message) -> None:
        process = self._process
        if process is not None and message.type == protocol.STDERR:
            process.note_stderr(message.output)
        handler = self._options.on_output
        if handler is not None:
            handler(message.type, message.output)
            return
        level = logging.INFO if message.type == protocol.STDOUT else logging.WARNING
        for line in message.output.rstrip("\n").split("\n"):
            output_log.log(level, "[%s] %s", self._target.name, line)


class _HeartbeatClock:
    """The sync supervisor's heartbeats: sends them and collects their echoes without blocking."""

    def __init__(self, worker: ParentWorker) -> None:
        self.beats = worker._beats
        self.on = worker._options.heartbeat_interval > 0
        self.waiters: dict[str, SignallingWaiter] = {}

    def wait(self) -> float:
        """How long the supervisor may sleep before the next heartbeat event."""
        if not self.on:
            return 1.0
        return max(0.0, min(self.beats.next_event() - time.monotonic(), 1.0))

    def tick(self, worker: ParentWorker, channel: SyncChannel) -> None:
        if not self.on:
            return
        for msg_id, waiter in list(self.waiters.items()):
            if waiter.done:
                del self.waiters[msg_id]
                if waiter.error is None:
                    worker._heartbeat_rtt(waiter.outcome(), waiter.arrived)
        now = time.monotonic()
        for msg_id in self.beats.overdue(now):
            self.waiters.pop(msg_id, None)
            channel.forget(msg_id)
            worker._heartbeat_expired(msg_id)
            if worker._target.relocatable:
                worker._reconnect_if_moved()
                if channel is not worker._channel:
                    return  # reconnected: the rest were the old connection's
        if self.beats.due(now):
            message = protocol.heartbeat()
            try:
                beat, _ = channel.submit(message["id"], pack_message(message),
                                         lambda: SignallingWaiter(worker._wake_w))
            except MultifrostError:
                return
            self.beats.sent(message["id"], now)
            self.waiters[message["id"]] = beat  # type: ignore[assignment]  # the factory above made it


def _stop_process(process: ChildProcess, shutdown: bool, grace: float) -> None:
    """After SHUTDOWN (if sent), give the child ``grace`` s to exit; then SIGTERM, ``grace`` s
    more, and SIGKILL to its whole session, which also ends what it left running."""
    if shutdown:
        process.wait(grace)
    process.stop(grace)
    process.close()


def _check_grace(grace: object) -> None:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace < float("inf"):
        raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")


def _backoff_delays(attempts: int) -> list[float]:
    """Seconds to wait before each restart attempt: doubling from 0.1 s, capped at 5 s."""
    return [min(_BACKOFF_START * 2.0 ** min(i, 32), _BACKOFF_CAP) for i in range(attempts)]


def _sleep_on(fd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s or until ``fd`` is written to; True when it was."""
    import select
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))
