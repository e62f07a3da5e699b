"""ChildWorker: the worker side. Subclass it, define methods, call ``run()``.

The child serves one ChildEnd (ROUTER semantics) on a loop: asyncio's when the worker has an
``async def`` or async generator method, else ``child_loop.PollLoop`` (then asyncio, most of a
worker's start-up, is never imported). One path leads from a readable socket to a dispatched
call, whatever then runs the method: the reader (``_serve_ready``) takes one message at a
time and ``_dispatch`` routes it; a CALL goes to ``_on_call``, which picks the runner: an
``async def`` method runs as a task, a plain method that was quick last time runs inline on
the loop (saving the two thread hops a pool costs on every call), any other on a bounded
thread pool. The watchdog (``child_watchdog``) keeps the worker responsive when an inline
method blocks: it runs the same reader until the method returns (further plain calls then go
to the pool, async ones to the loop). Sends go through ``child_io``.
"""
from __future__ import annotations

import logging
import os
import threading
from time import monotonic
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from . import protocol, wire
from .child_ext import TAKEN, WorkerExtensions
from .child_io import ChildIO
from .child_shutdown import abandon_in_flight, answer_stuck, finish_in_flight, finish_in_flight_on
from .child_loop import PollLoop
from .child_methods import Gone, awaitable, error_payload, needs_asyncio, resolve, result_payload
from .child_watchdog import TAKEOVER, Watchdog
from .codec import Limits, Payload, pack_message
from .errors import ProtocolError
from .extensions import announce
from .held import DEFAULT_BUDGET, HeldReplies
from .logs import bind
from .transports import ChildEnd
from .wire import DEBUG, wire_debug

if TYPE_CHECKING:
    import asyncio

    from .child_loop import ChildLoop

log = logging.getLogger(__name__)


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
        self._io = ChildIO(max_held_bytes)
        self._io_send = self._io.send
        self._held: HeldReplies = self._io.held  # replies to peers that are not reading
        # serving sets these; stop() alone may see them None (before the first serve())
        self._loop: ChildLoop = None  # type: ignore[assignment]
        self._loop_thread: int | None = None
        self._stopping: asyncio.Event | threading.Event = None  # type: ignore[assignment]
        self._stop_asked = False  # stop() was called (before serve() had a loop, or while serving): refuse calls
        self._watchdog = Watchdog(self)
        self._tasks: set[asyncio.Task] = set()
        self._pool_calls: dict[Future, tuple[bytes, str]] = {}  # -> (peer, msg_id)
        self._stuck_calls = 0  # plain calls still running when serve() returned
        self._pool: ThreadPoolExecutor = None  # type: ignore[assignment]
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

    @property
    def call_counts(self) -> dict[str, int]:
        """Calls not started (deadline passed, cancelled while queued) and calls cancelled while running."""
        return dict(self._ext.counts)

    # -- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until shutdown, SIGTERM/SIGINT, or (spawn mode) the parent going away."""
        from .runner import run_worker
        run_worker(self)

    def _needs_asyncio(self) -> bool:
        """Whether serving needs asyncio: the class (or the instance) defines an ``async def`` or
        async generator method, public or private. ``run()`` serves any other worker on a
        PollLoop, without importing asyncio."""
        return needs_asyncio(self, ChildWorker)

    async def serve(self, end: ChildEnd) -> None:
        """Serve ``end`` on the running asyncio loop until ``stop()`` or a SHUTDOWN message."""
        import asyncio

        stopping = asyncio.Event()
        self._open(end, asyncio.get_running_loop(), stopping)
        try:
            self._on_readable()
            await stopping.wait()
            await finish_in_flight(self)
        finally:
            self._close(end)
            await abandon_in_flight(self)
            self._closed()

    def serve_on(self, loop: PollLoop, end: ChildEnd) -> None:
        """``serve`` on a ``child_loop.PollLoop`` that this thread runs: for a worker without
        async methods (``_needs_asyncio()`` is False), which then never imports asyncio."""
        stopping = threading.Event()
        self._open(end, loop, stopping)
        try:
            self._on_readable()
            loop.run_until(stopping.is_set)
            finish_in_flight_on(self, loop)
        finally:
            self._close(end)
            answer_stuck(self)
            self._closed()

    def _open(self, end: ChildEnd, loop: ChildLoop, stopping: asyncio.Event | threading.Event) -> None:
        """Start serving ``end`` on ``loop`` (its thread calls this): the pool, the readers, the watchdog."""
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._wire = bind(wire.log, worker_id=type(self).__name__, service_id=self.service_id, pid=os.getpid())
        self._stopping = stopping
        if self._stop_asked:
            stopping.set()
        self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="multifrost-call")
        self._io.attach(end, loop, self._on_readable)
        wakeup = self._io.wakeup
        assert wakeup is not None  # attach made it
        self._watchdog.start(end.fileno(), wakeup.fd)
        loop.add_reader(end.fileno(), self._on_readable)
        loop.add_reader(wakeup.fd, self._on_wakeup)

    def _close(self, end: ChildEnd) -> None:
        """Stop reading: the readers off the loop, the watchdog ended (calls in flight go on)."""
        wakeup = self._io.wakeup
        assert wakeup is not None  # detached only by _closed
        for fd in (end.fileno(), wakeup.fd):
            self._loop.remove_reader(fd)
        self._watchdog.stop()

    def _closed(self) -> None:
        """Serving has ended (calls in flight answered or abandoned): let the pool and the end go."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._io.detach()
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

    # -- receiving: the one path from a readable socket to a dispatched call -------------------

    def _on_wakeup(self) -> None:
        """Another thread's send hid a message (ChildIO.wakeup): clear it, then a pass."""
        self._io.clear_wakeup()
        self._on_readable()

    def _on_readable(self) -> None:
        """The loop's reader callback (end or wake-up readable, or a send hid a message): a pass
        of the reader, then retry held replies and send output that waited for a parent."""
        io = self._io
        io.pass_started()
        io.reading = True
        try:
            self._serve_ready()
        finally:
            io.reading = False
            io.uncork()
        for payload in io.after_pass():
            if wire_debug(DEBUG):
                wire.note(self._wire, "sent", payload, "every parent")

    def _serve_ready(self) -> None:
        """The reader: dispatch messages one at a time until none is ready (so that none waits
        behind a slow method in a local batch). Runs on the loop, or in the watchdog while an
        inline method holds the loop."""
        take = self._io.take
        while True:
            item = take()
            if item is None:
                return
            self._dispatch(item[0], item[1])

    def _dispatch(self, peer: bytes, payload: bytes) -> None:
        """Route one message. Nothing a peer sends may stop the loop (or the watchdog):
        whatever fails here drops that message with one log line."""
        try:
            message = protocol.decode(payload, self.limits)
            if wire_debug(DEBUG):
                wire.note(self._wire, "received", payload, peer.hex(), message.raw)
            kind = message.type
            if kind == protocol.CALL:
                self._on_call(peer, message)
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

    def _on_call(self, peer: bytes, message: protocol.Message) -> None:
        if message.namespace != self.namespace:
            log.debug("ignored a call for namespace %r", message.namespace)
            return
        msg_id, raw = message.id, message.raw
        if "function" not in raw:
            self._reply_error(peer, msg_id, "Message missing 'function' field")
            return
        if msg_id is None:
            self._reply_error(peer, None, "Message missing 'id' field")
            return
        if self._stop_asked:  # set by stop() at once, from any thread; _stopping follows on the loop
            self._reply_error(peer, msg_id, "Worker is shutting down")
            return
        args = message.args
        if not isinstance(args, list):
            self._reply_error(peer, msg_id, f"Message 'args' must be an array, not {type(args).__name__}")
            return
        try:
            fn, is_async = resolve(self, ChildWorker, self._functions, raw["function"])
        except Gone as exc:
            self._reply_error(peer, msg_id, str(exc))
            return
        taken = self._ext.prepare(peer, message, fn, is_async, args)  # issue 15 hook: None for a plain call
        if taken is None:
            context = None
        elif taken is TAKEN:
            return
        else:
            fn, is_async, context = taken
        if is_async:
            self._start_task(peer, msg_id, fn, args, context)
        elif fn in self._quick and self._inline_since is None and threading.get_ident() == self._loop_thread:
            self._run_inline(peer, msg_id, fn, args, context)
        else:
            self._submit(peer, msg_id, fn, args, context)

    def _submit(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        """Run a call on the pool (a call in flight until it answers)."""
        future = self._pool.submit(self._run_in_pool, peer, msg_id, fn, args, context)
        self._pool_calls[future] = (peer, msg_id)
        future.add_done_callback(self._pool_calls.pop)

    # -- answering -------------------------------------------------------------------------

    def _run_inline(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        """Run a plain method on the loop thread; the watchdog covers for it if it blocks."""
        self._inline_since = started = monotonic()
        if self._watchdog.idle:
            self._watchdog.busy()
        try:
            result = fn(*args) if context is None else self._ext.run(peer, context, fn, args)
        except Exception as exc:  # the method's failure is the caller's answer
            payload: Payload = self._error_payload(msg_id, exc)
        else:
            if awaitable(result):
                self._start_task(peer, msg_id, _await, [result])
                return
            payload = result_payload(self.limits, msg_id, fn, result, self._io.gathers)
        finally:
            self._inline_since = None
            if monotonic() - started >= TAKEOVER:
                self._quick.discard(fn)
        self._send(peer, payload)

    def _run_in_pool(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        started = monotonic()
        try:
            result = fn(*args) if context is None else self._ext.run(peer, context, fn, args)
            if monotonic() - started < TAKEOVER:
                self._quick.add(fn)
            if awaitable(result):
                result = self._settle(result)
        except Exception as exc:
            payload: Payload = self._error_payload(msg_id, exc)
        else:
            payload = result_payload(self.limits, msg_id, fn, result, self._io.gathers)
        self._send(peer, payload)

    def _settle(self, result: Any) -> Any:
        """In a pool thread: await what a plain method returned, on the asyncio loop (on a
        PollLoop, where no method is async, with an asyncio loop of this thread's own)."""
        import asyncio

        if type(self._loop) is PollLoop:
            return asyncio.run(_await(result))
        return asyncio.run_coroutine_threadsafe(_await(result), self._loop).result()  # type: ignore[arg-type]

    def _start_task(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        """Run an ``async def`` method as a task on the loop (from any thread); on a PollLoop,
        where only a plain method's awaitable result comes here, in a pool thread."""
        if type(self._loop) is PollLoop:
            self._submit(peer, msg_id, fn, args, context)
            return
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._start_task, peer, msg_id, fn, args, context)
            return
        self._tasks.add(self._loop.create_task(self._run_async(peer, msg_id, fn, args, context)))  # type: ignore[attr-defined]

    async def _run_async(self, peer: bytes, msg_id: str, fn: Callable, args: list, context=None) -> None:
        """The task of an ``async def`` call: run it, answer, and leave ``_tasks`` itself (a done
        callback would cost the loop one more turn, and a system call, per call)."""
        import asyncio

        try:
            result = await (fn(*args) if context is None else self._ext.arun(peer, context, fn, args))
        except asyncio.CancelledError:
            self._reply_error(peer, msg_id, "Worker stopped before the call finished")
            raise
        except Exception as exc:
            payload: Payload = self._error_payload(msg_id, exc)
        else:
            payload = result_payload(self.limits, msg_id, fn, result, self._io.gathers)
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]  # this task, never None
        self._send(peer, payload)

    _error_payload = staticmethod(error_payload)

    def _reply_error(self, peer: bytes, msg_id: str | None, text: str) -> None:
        self._send(peer, pack_message(protocol.error(msg_id, text)))

    def _send(self, peer: bytes, payload: Payload) -> None:
        """Send one reply from any thread; held while the peer is not reading (``max_held_bytes``)."""
        if wire_debug(DEBUG):
            wire.note(self._wire, "sent", payload, peer.hex())
        self._io_send(peer, payload)

    def send_output(self, stream: str, text: str) -> None:
        """Send printed text to every parent this worker has heard from (best effort)."""
        payload = pack_message(protocol.output(stream, text))
        for sent in self._io.send_output(payload):
            if wire_debug(DEBUG):
                wire.note(self._wire, "sent", sent, "every parent")


async def _await(awaitable):
    return await awaitable
