"""The call path both APIs share: the circuit permit, the CALL envelope, the timeout, the
metrics and per-call record, and turning a reply into a result or an exception."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from .. import extensions, protocol, wire
from ..codec import Payload, pack_message
from ..errors import (CallTimeoutError, CircuitOpenError, MultifrostError, RemoteCallError, WorkerCrashedError,
                      WorkerStartError)
from ..logs import ContextLogger, bind
from ..metrics import Metrics, NullMetrics
from ..options import WorkerOptions
from ..process import ChildProcess
from ..target import Target
from ..timeouts import check_timeout
from ..transports import DEFAULT_MAX_MESSAGE_SIZE
from .circuit import CLOSED
from .lifecycle import Lifecycle

if TYPE_CHECKING:
    from .driver import Driver

parent_log = logging.getLogger("multifrost.parent")  # the package's: every ParentWorker record
UNSET: Any = object()


class CallPath:
    """Mixed into ParentWorker: what a call does before it is sent and after its reply is in."""

    _target: Target
    _options: WorkerOptions
    _core: Lifecycle
    _lock: threading.RLock
    _driver: Driver | None
    _log: ContextLogger
    metrics: Metrics | NullMetrics

    def _prepare(self, function: str, args: Iterable[Any], timeout: Any, namespace: str | None,
                 window: int | None = None, traceparent: str | None = None) -> tuple[str, Payload, float | None, str]:
        """Check the circuit and build the CALL; PayloadError here means nothing was sent.

        ``traceparent``: the caller's span (the call path opens one only while tracing records)."""
        if not isinstance(function, str):
            raise TypeError(f"function name must be str, not {type(function).__name__}")
        timeout = self._options.default_timeout if timeout is UNSET else check_timeout(timeout)
        permit = CLOSED  # a closed circuit's permit needs neither the lock nor the clock
        if self._core.breaker.opened_at is not None:
            with self._lock:
                allowed = self._core.permit(time.monotonic())
            if allowed is None:
                raise CircuitOpenError(f"circuit breaker open for {self._target.describe()}: "
                                       f"calls fail at once until the reset timeout passes or restart() is called")
            permit = allowed
        message = protocol.call(function, list(args), namespace or protocol.DEFAULT_NAMESPACE,
                                self._options.client_name)
        channel = self._channel  # issue 15 hook: extension data only for a worker that agreed to it
        if channel is not None and channel.extensions:
            extras = extensions.call_extras(channel.extensions, None if window else timeout, traceparent, window)
            message["metadata"] = {extensions.CALL_KEY: extras}
        try:
            gather = channel is not None and channel.end.gathers  # large bytes args go out uncopied (unix)
            payload = protocol.check_size(pack_message(message, limits=self._options.limits, gather=gather),
                                          DEFAULT_MAX_MESSAGE_SIZE)
        except BaseException:
            self._end_trial(permit)
            raise
        return message["id"], payload, timeout, permit

    @property
    def _channel(self) -> Any:
        """The live channel (None before start, while down, after close)."""
        driver = self._driver
        return driver.channel if driver is not None else None

    def _finish(self, reply: protocol.Message, started: float, permit: str, function: str = "") -> Any:
        elapsed = time.perf_counter() - started
        outcome = "ok" if reply.type == protocol.RESPONSE else "error"
        self.metrics.call_finished(elapsed, outcome)
        if parent_log.isEnabledFor(logging.DEBUG):
            self._call_record(reply.id, function, elapsed, outcome)
        if permit == "trial" or self._core.breaker.failures:
            with self._lock:
                actions = self._core.call_answered(permit, time.monotonic())
            self._carry_out(actions)
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
        if parent_log.isEnabledFor(logging.DEBUG):
            self._call_record(msg_id, function, elapsed, f"{outcome} ({type(exc).__name__})")
        if permit == "trial":
            crash = isinstance(exc, (WorkerCrashedError, WorkerStartError))
            with self._lock:
                actions = self._core.call_failed(permit, crash, time.monotonic())
            self._carry_out(actions)

    def _end_trial(self, permit: str) -> None:
        """A trial call that neither succeeded nor failed (never sent, left early): the next call may try."""
        if permit == "trial":
            with self._lock:
                self._core.call_failed(permit, False, time.monotonic())

    def _carry_out(self, actions: list) -> None:
        driver = self._driver
        if driver is not None:
            driver.carry_out(actions)

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

    def _what(self, function: str) -> str:
        return f"call {function}() to {self._target.describe()}"

    def _ping_timeout(self, timeout: float | None) -> float:
        timeout = check_timeout(timeout)
        return self._options.heartbeat_timeout if timeout is None else timeout
