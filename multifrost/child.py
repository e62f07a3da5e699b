"""ChildWorker: the worker side. Subclass it, define methods, call ``run()``.

The child serves one ChildEnd (ROUTER semantics) on an asyncio loop: the loop drains the
socket when its fd wakes, answers heartbeats at once, runs ``async def`` methods as tasks,
and runs a plain method inline, which saves the two thread hops a pool would cost on
every call. A watchdog thread keeps the worker responsive when a plain method blocks:
once the loop has been busy in one method for ``TAKEOVER`` seconds, the watchdog reads
the socket itself, echoes heartbeats, runs further plain calls on a bounded thread pool
and queues async ones for the loop, until the method returns.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import select
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from . import protocol, wire
from .child_ext import TAKEN, WorkerExtensions
from .child_shutdown import abandon_in_flight, finish_in_flight
from .child_methods import Gone, error_payload, resolve, result_payload
from .codec import Limits, pack_message
from .errors import ProtocolError
from .extensions import announce
from .held import DEFAULT_BUDGET, HeldReplies
from .logs import bind
from .transports import ChildEnd
from .wire import DEBUG, wire_debug

log = logging.getLogger(__name__)

TAKEOVER = 0.01  # seconds a plain method may hold the loop before the watchdog serves the socket
_HELD_RETRY = 0.1  # seconds: held replies are retried on every wake-up, and at least this often


class ChildWorker:
    """Base class of a worker: the public methods of a subclass are callable remotely.

    ``service_id`` makes ``run()`` a connect-mode service (bind ``host``:``port``, register in
    ``registry``, serve any parent); without it ``run()`` connects to the parent that spawned
    this process. A bind beyond loopback needs CURVE (``curve_secret_key``, optionally
    ``curve_authorized_keys``) or ``insecure=True``; ``advertise`` is the address clients dial.
    """

    namespace: str = protocol.DEFAULT_NAMESPACE

    def __init__(self, service_id: str | None = None, *, namespace: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, max_workers: int | None = None,
                 shutdown_grace: float = 5.0, limits: Limits | None = None,
                 max_held_bytes: int = DEFAULT_BUDGET, registry: Any = None, advertise: str | None = None,
                 insecure: bool = False, curve_secret_key: str | os.PathLike[str] | None = None,
                 curve_authorized_keys: str | os.PathLike[str] | None = None,
                 lease_ttl: float | None = None) -> None:
        self.service_id = service_id
        self.limits = limits  # decoding limits of calls, and the parents' limits results must respect
        if namespace is not None:
            self.namespace = namespace
        self.host = host
        self.port = port
        # connect mode (see multifrost.service): where to announce, what clients dial, how to secure it
        self.registry = registry
        self.advertise = advertise
        self.insecure = insecure
        self.curve_secret_key = curve_secret_key
        self.curve_authorized_keys = curve_authorized_keys
        self.lease_ttl = lease_ttl
        self.shutdown_grace = shutdown_grace
        self._max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._functions: dict[str, tuple[Callable, bool]] = {}
        self._io_lock = threading.RLock()
        self._end: ChildEnd | None = None
        # serve() sets these three; stop() alone may see them None (before the first serve())
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._loop_thread: int | None = None
        self._stopping: asyncio.Event = None  # type: ignore[assignment]
        self._stop_asked = False  # stop() came before serve() had a loop
        self._serving = threading.Event()
        self._watch_stop = threading.Event()
        self._draining = False
        self._tasks: set[asyncio.Task] = set()
        self._pool_calls: dict[Future, tuple[bytes, str]] = {}  # -> (peer, msg_id)
        self._stuck_calls = 0  # plain calls still running when serve() returned
        self._pool: ThreadPoolExecutor = None  # type: ignore[assignment]
        self._held = HeldReplies(max_held_bytes)  # replies to peers that are not reading
        self._held_retry: asyncio.TimerHandle | None = None
        self._early_output: deque[bytes] = deque(maxlen=1000)
        self._inline_since: float | None = None
        self._quick: set[Callable] = set()  # plain methods whose last run was quick: run inline
        self._ext = WorkerExtensions(self)  # issue 15: cancel, deadlines, trace context, streams

    # -- what may be called ----------------------------------------------------------------

    def list_functions(self) -> list[str]:
        """Names of the methods a parent may call: public callables defined by subclasses."""
        names: set[str] = set()
        for cls in type(self).__mro__:
            if cls is ChildWorker or cls is object:
                continue
            names.update(n for n, v in vars(cls).items() if not n.startswith("_") and callable(v))
        return sorted(n for n in names if callable(getattr(self, n, None)))

    def _resolve(self, name: Any) -> tuple[Callable, bool]:
        return resolve(self, ChildWorker, self._functions, name)

    @property
    def call_counts(self) -> dict[str, int]:
        """Calls not started (deadline passed, cancelled while queued) and calls cancelled while running."""
        return dict(self._ext.counts)

    # -- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until shutdown, SIGTERM/SIGINT, or (spawn mode) the parent going away."""
        from .runner import run_worker
        run_worker(self)

    async def serve(self, end: ChildEnd) -> None:
        """Serve ``end`` on the running loop until ``stop()`` or a SHUTDOWN message."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wire = bind(wire.log, worker_id=type(self).__name__, service_id=self.service_id, pid=os.getpid())
        self._stopping = asyncio.Event()
        if self._stop_asked:
            self._stopping.set()
        self._end = end
        self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="multifrost-call")
        self._serving.set()
        self._watch_stop.clear()
        watchdog = threading.Thread(target=self._watch, args=(end,), name="multifrost-watchdog", daemon=True)
        watchdog.start()
        fd = end.fileno()
        self._loop.add_reader(fd, self._drain)
        try:
            self._drain()
            await self._stopping.wait()
            await finish_in_flight(self)
        finally:
            self._loop.remove_reader(fd)
            self._serving.clear()
            self._watch_stop.set()
            watchdog.join()
            await abandon_in_flight(self)
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._held_retry is not None:
                self._held_retry.cancel()
                self._held_retry = None
            self._end = None
            self._stop_asked = False

    def stop(self) -> None:
        """Ask a serving worker to stop taking calls and return from ``serve``; thread-safe
        (called before ``serve`` has started, it makes ``serve`` return at once)."""
        self._stop_asked = True
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            stopping.set()
        else:
            loop.call_soon_threadsafe(stopping.set)

    def _watch(self, end: ChildEnd) -> None:
        """Watchdog thread: serve the socket while a plain method holds the loop."""
        poller = select.poll()
        poller.register(end.fileno(), select.POLLIN)
        while self._serving.is_set():
            since = self._inline_since
            if since is None or time.monotonic() - since < TAKEOVER:
                if self._watch_stop.wait(TAKEOVER):
                    return
                continue
            with self._io_lock:
                items = end.recv_all()
            for peer, payload in items:
                self._handle(peer, payload, on_loop=False)
            poller.poll(TAKEOVER * 1000)

    # -- receiving -------------------------------------------------------------------------

    def _drain(self) -> None:
        """Reader callback: handle messages one at a time (so none waits behind a slow
        method in a local batch), then retry replies held at the high-water mark."""
        end = self._end
        self._draining = True
        try:
            while end is not None:
                with self._io_lock:
                    item = end.recv_nowait()
                if item is None:
                    break
                self._handle(item[0], item[1], on_loop=True)
                end = self._end
        finally:
            self._draining = False
        if self._held and end is not None:
            with self._io_lock:
                self._held.flush(end)
            self._arm_held_retry()
        if self._early_output and end is not None and end.peers:
            early, self._early_output = list(self._early_output), deque(maxlen=1000)
            with self._io_lock:
                for payload in early:
                    self._send_all(end, payload)

    def _handle_batch(self, items: list) -> None:
        """On the loop: messages another thread read. Only the last may run inline."""
        last = len(items) - 1
        for i, (peer, payload) in enumerate(items):
            self._handle(peer, payload, on_loop=True, inline=i == last)

    def _handle(self, peer: bytes, payload: bytes, *, on_loop: bool, inline: bool = True) -> None:
        """Dispatch one message. Nothing a peer sends may stop the loop (or the watchdog):
        whatever fails here drops that message with one log line."""
        try:
            message = protocol.decode(payload, self.limits)
            if wire_debug(DEBUG):
                wire.note(self._wire, "received", payload, peer.hex(), message.raw)
            kind = message.type
            if kind == protocol.CALL:
                self._on_call(peer, message, on_loop, inline)
            elif kind == protocol.HEARTBEAT:
                self._send(peer, pack_message(announce(protocol.heartbeat_echo(message))))
            elif kind == protocol.CANCEL or kind == protocol.CREDIT:  # issue 15 extensions
                self._ext.on_control(peer, message)
            elif kind == protocol.SHUTDOWN:
                log.info("shutdown requested by peer %s", peer.hex())
                self.stop()
            else:
                log.debug("ignored a %s message", kind)
        except ProtocolError as exc:
            log.warning("dropped a message from peer %s: %s", peer.hex(), exc)
            dropped_id, dropped_kind = protocol.peek(payload)
            if dropped_kind == protocol.CALL:  # whoever waits for it gets an answer, not a timeout
                self._reply_error(peer, dropped_id, f"ProtocolError: the call was dropped: {exc}")
        except Exception as exc:  # e.g. a heartbeat whose metadata cannot be echoed
            log.warning("dropped a message from peer %s: %s: %s", peer.hex(), type(exc).__name__, exc)

    def _on_call(self, peer: bytes, message: protocol.Message, on_loop: bool, inline: bool) -> None:
        if message.namespace != self.namespace:
            log.debug("ignored a call for namespace %r", message.namespace)
            return
        msg_id = message.id
        if "function" not in message.raw:
            self._reply_error(peer, msg_id, "Message missing 'function' field")
            return
        if msg_id is None:
            self._reply_error(peer, None, "Message missing 'id' field")
            return
        if self._stopping.is_set():
            self._reply_error(peer, msg_id, "Worker is shutting down")
            return
        args = message.args
        if not isinstance(args, list):
            self._reply_error(peer, msg_id, f"Message 'args' must be an array, not {type(args).__name__}")
            return
        try:
            fn, is_async = self._resolve(message.function)
        except Gone as exc:
            self._reply_error(peer, msg_id, str(exc))
            return
        context = None
        if self._ext.wants(message, fn):  # issue 15 hook: extension data, or a generator method
            taken = self._ext.prepare(peer, message, fn, is_async, args)
            if taken is TAKEN:
                return
            fn, is_async, context = taken
        if is_async:
            if on_loop:
                self._start_task(peer, msg_id, fn, args, context)
            else:
                self._loop.call_soon_threadsafe(self._start_task, peer, msg_id, fn, args, context)
        elif on_loop and inline and fn in self._quick and self._inline_since is None:
            self._run_inline(peer, msg_id, fn, args, context)
        else:
            future = self._pool.submit(self._run_in_pool, peer, msg_id, fn, args, context)
            self._pool_calls[future] = (peer, msg_id)
            future.add_done_callback(self._pool_calls.pop)

    # -- answering -------------------------------------------------------------------------

    def _run_inline(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        """Run a plain method on the loop thread; the watchdog covers for it if it blocks."""
        self._inline_since = started = time.monotonic()
        try:
            result = fn(*args) if context is None else self._ext.run(peer, context, fn, args)
        except Exception as exc:  # the method's failure is the caller's answer
            payload = self._error_payload(msg_id, exc)
        else:
            if inspect.isawaitable(result):
                self._start_task(peer, msg_id, _await, [result])
                return
            payload = self._result_payload(msg_id, fn, result)
        finally:
            self._inline_since = None
            if time.monotonic() - started >= TAKEOVER:
                self._quick.discard(fn)
        self._send(peer, payload)

    def _run_in_pool(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        started = time.monotonic()
        try:
            result = fn(*args) if context is None else self._ext.run(peer, context, fn, args)
            if time.monotonic() - started < TAKEOVER:
                self._quick.add(fn)
            if inspect.isawaitable(result):
                result = asyncio.run_coroutine_threadsafe(_await(result), self._loop).result()
        except Exception as exc:
            payload = self._error_payload(msg_id, exc)
        else:
            payload = self._result_payload(msg_id, fn, result)
        self._send(peer, payload)

    def _start_task(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        task = self._loop.create_task(self._run_async(peer, msg_id, fn, args, context))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_async(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        try:
            result = await (fn(*args) if context is None else self._ext.arun(peer, context, fn, args))
        except asyncio.CancelledError:
            self._reply_error(peer, msg_id, "Worker stopped before the call finished")
            raise
        except Exception as exc:
            payload = self._error_payload(msg_id, exc)
        else:
            payload = self._result_payload(msg_id, fn, result)
        self._send(peer, payload)

    def _result_payload(self, msg_id: str, fn: Callable, result: Any) -> bytes:
        return result_payload(self.limits, msg_id, fn, result)

    _error_payload = staticmethod(error_payload)

    def _reply_error(self, peer: bytes, msg_id: str | None, text: str) -> None:
        self._send(peer, pack_message(protocol.error(msg_id, text)))

    def _send(self, peer: bytes, payload: bytes) -> None:
        """Send one reply; hold it while the peer is not reading (within ``max_held_bytes``)."""
        if wire_debug(DEBUG):
            wire.note(self._wire, "sent", payload, peer.hex())
        def send(end: ChildEnd) -> None:
            self._held.send(end, peer, payload)
        self._with_end(send)
        if self._held and self._end is not None:
            if threading.get_ident() == self._loop_thread:
                self._arm_held_retry()
            else:
                self._loop.call_soon_threadsafe(self._arm_held_retry)

    def _arm_held_retry(self) -> None:
        """On the loop: look at held replies again soon, in case no wake-up says there is room."""
        if self._held and self._held_retry is None:
            self._held_retry = self._loop.call_later(_HELD_RETRY, self._held_retry_due)

    def _held_retry_due(self) -> None:
        self._held_retry = None
        self._drain()

    def send_output(self, stream: str, text: str) -> None:
        """Send printed text to every parent this worker has heard from (best effort)."""
        payload = pack_message(protocol.output(stream, text))
        if self._end is None:
            self._early_output.append(payload)
            return

        def send(end: ChildEnd) -> None:
            if end.peers:
                self._send_all(end, payload)
            else:
                self._early_output.append(payload)  # nobody to send to yet: keep it
        self._with_end(send)

    def _send_all(self, end: ChildEnd, payload: bytes) -> None:
        end.send_all(payload)
        if wire_debug(DEBUG):
            wire.note(self._wire, "sent", payload, "every parent")

    def _with_end(self, operation: Callable[[ChildEnd], Any]) -> None:
        """Run a send under the I/O lock, from any thread, and keep the edge-triggered fd honest.

        A send may swallow the wake-up of a message that arrived meanwhile. On the loop
        thread, a drain is scheduled; elsewhere the sender reads what is ready and hands
        it on (handling it itself while the loop is busy in a method).
        """
        end = self._end
        if end is None:
            return
        on_loop = threading.get_ident() == self._loop_thread
        with self._io_lock:
            operation(end)
            items = [] if on_loop else end.recv_all()
        if on_loop:
            if not self._draining:  # a running drain reads again anyway
                self._loop.call_soon(self._drain)
        elif items:
            if self._inline_since is not None:
                for peer, payload in items:
                    self._handle(peer, payload, on_loop=False)
            else:
                self._loop.call_soon_threadsafe(self._handle_batch, items)


async def _await(awaitable):
    return await awaitable
