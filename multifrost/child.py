"""ChildWorker: the worker side. Subclass it, define methods, call ``run()``.

The child owns one ChildEnd (ROUTER semantics) and serves it on an asyncio loop:
the loop reads (drain on wake-up), answers heartbeats at once, runs ``async def``
methods as tasks and plain methods on a bounded thread pool. A pool thread sends its
own reply under the I/O lock, so a plain method costs one thread hop, not two.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from . import protocol
from .codec import pack_message, unpack_message
from .errors import PayloadError, ProtocolError, TransportError
from .transports import ChildEnd

log = logging.getLogger("multifrost.child")

class _Gone(Exception):
    """The function cannot be called; the message is the wire error text."""


class ChildWorker:
    """Base class of a worker: the public methods of a subclass are callable remotely.

    ``service_id`` makes ``run()`` a connect-mode service (bind, register, serve any
    parent); without it ``run()`` connects to the parent that spawned this process.
    """

    namespace: str = protocol.DEFAULT_NAMESPACE

    def __init__(self, service_id: str | None = None, *, namespace: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, max_workers: int | None = None,
                 shutdown_grace: float = 5.0) -> None:
        self.service_id = service_id
        if namespace is not None:
            self.namespace = namespace
        self.host = host
        self.port = port
        self.shutdown_grace = shutdown_grace
        self._max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._functions: dict[str, Callable] = {}
        self._io_lock = threading.RLock()
        self._end: ChildEnd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._draining = False
        self._tasks: set[asyncio.Future] = set()
        self._backlog: list[tuple[bytes, bytes]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._loop_thread: int | None = None
        self._early_output: deque[bytes] = deque(maxlen=1000)

    # -- what may be called ----------------------------------------------------------------

    def list_functions(self) -> list[str]:
        """Names of the methods a parent may call: public callables defined by subclasses."""
        names = set()
        for cls in type(self).__mro__:
            if cls is ChildWorker or cls is object:
                continue
            names.update(n for n, v in vars(cls).items() if not n.startswith("_") and callable(v))
        return sorted(n for n in names if callable(getattr(self, n, None)))

    def _resolve(self, name: Any) -> Callable:
        """The bound method for ``name``, or _Gone with the protocol's error text."""
        fn = self._functions.get(name) if isinstance(name, str) else None
        if fn is not None:
            return fn
        if not isinstance(name, str):
            raise _Gone(f"Function {name!r} not found")
        if name.startswith("_"):
            raise _Gone(f"Cannot call private method '{name}'")
        defined = name in vars(self) or any(
            name in vars(cls) for cls in type(self).__mro__ if cls is not ChildWorker and cls is not object)
        if not defined:
            raise _Gone(f"Function '{name}' not found")
        fn = getattr(self, name)
        if not callable(fn):
            raise _Gone(f"'{name}' is not callable")
        self._functions[name] = fn
        return fn

    # -- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until shutdown, SIGTERM/SIGINT, or (spawn mode) the parent going away."""
        from .runner import run_worker
        run_worker(self)

    async def serve(self, end: ChildEnd, *, parent_pid: int | None = None) -> None:
        """Serve ``end`` on the running loop until ``stop()`` or a SHUTDOWN message."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = asyncio.Event()
        self._end = end
        self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="multifrost-call")
        fd = end.fileno()
        self._loop.add_reader(fd, self._drain)
        watcher = self._loop.create_task(self._watch_parent(parent_pid)) if parent_pid else None
        try:
            self._drain()
            await self._stopping.wait()
            await self._finish_in_flight()
        finally:
            self._loop.remove_reader(fd)
            if watcher is not None:
                watcher.cancel()
            for task in list(self._tasks):
                task.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._end = None

    def stop(self) -> None:
        """Ask a serving worker to stop taking calls and return from ``serve``; thread-safe."""
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            stopping.set()
        else:
            loop.call_soon_threadsafe(stopping.set)

    async def _finish_in_flight(self) -> None:
        """Give calls in flight up to ``shutdown_grace`` seconds to answer."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.shutdown_grace)

    async def _watch_parent(self, parent_pid: int) -> None:
        """Spawn mode: stop when the parent process is gone (we were re-parented)."""
        while os.getppid() == parent_pid:
            await asyncio.sleep(0.5)
        log.warning("parent process %d is gone; stopping", parent_pid)
        self._stopping.set()

    # -- receiving -------------------------------------------------------------------------

    def _drain(self) -> None:
        """Handle every ready message (the fd is edge-triggered), then retry held replies."""
        end = self._end
        if end is None:
            return
        with self._io_lock:
            items = []
            while True:
                item = end.recv_nowait()
                if item is None:
                    break
                items.append(item)
            backlog, self._backlog = self._backlog, []
        for peer, payload in items:
            self._handle(peer, payload)
        for peer, payload in backlog:
            self._send(peer, payload)
        if self._early_output and end.peers:
            early, self._early_output = list(self._early_output), deque(maxlen=1000)
            with self._io_lock:
                for payload in early:
                    end.send_all(payload)

    def _handle_batch(self, items: list) -> None:
        for peer, payload in items:
            self._handle(peer, payload)

    def _handle(self, peer: bytes, payload: bytes) -> None:
        try:
            message = protocol.parse(unpack_message(payload))
        except ProtocolError as exc:
            log.warning("dropped a message from peer %s: %s", peer.hex(), exc)
            return
        kind = message.type
        if kind == protocol.CALL:
            self._on_call(peer, message)
        elif kind == protocol.HEARTBEAT:
            self._send(peer, pack_message(protocol.heartbeat_echo(message)))
        elif kind == protocol.SHUTDOWN:
            log.info("shutdown requested by peer %s", peer.hex())
            self._stopping.set()
        else:
            log.debug("ignored a %s message", kind)

    def _on_call(self, peer: bytes, message: protocol.Message) -> None:
        if message.namespace != self.namespace:
            log.debug("ignored a call for namespace %r", message.namespace)
            return
        msg_id = message.id
        raw = message.raw
        if "function" not in raw:
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
            fn = self._resolve(message.function)
        except _Gone as exc:
            self._reply_error(peer, msg_id, str(exc))
            return
        if inspect.iscoroutinefunction(fn):
            task = self._loop.create_task(self._run_async(peer, msg_id, fn, args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            future = asyncio.wrap_future(self._pool.submit(self._run_sync, peer, msg_id, fn, args))
            self._tasks.add(future)
            future.add_done_callback(self._tasks.discard)

    # -- answering -------------------------------------------------------------------------

    def _run_sync(self, peer: bytes, msg_id: str, fn: Callable, args: list) -> None:
        """Pool thread: run a plain method and send its answer from this thread."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = asyncio.run_coroutine_threadsafe(_await(result), self._loop).result()
        except BaseException as exc:  # the method's failure is the caller's answer
            payload = self._error_payload(msg_id, exc)
        else:
            payload = self._result_payload(msg_id, fn, result)
        self._send(peer, payload)

    async def _run_async(self, peer: bytes, msg_id: str, fn: Callable, args: list) -> None:
        try:
            result = await fn(*args)
        except asyncio.CancelledError:
            self._reply_error(peer, msg_id, "Worker stopped before the call finished")
            raise
        except Exception as exc:
            payload = self._error_payload(msg_id, exc)
        else:
            payload = self._result_payload(msg_id, fn, result)
        self._send(peer, payload)

    @staticmethod
    def _result_payload(msg_id: str, fn: Callable, result: Any) -> bytes:
        try:
            return pack_message(protocol.response(msg_id, result))
        except PayloadError as exc:
            name = getattr(fn, "__name__", "function")
            return pack_message(protocol.error(msg_id, f"PayloadError: result of '{name}' cannot be sent: {exc}"))

    @staticmethod
    def _error_payload(msg_id: str, exc: BaseException) -> bytes:
        text = f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
        return pack_message(protocol.error(msg_id, text))

    def _reply_error(self, peer: bytes, msg_id: str | None, text: str) -> None:
        self._send(peer, pack_message(protocol.error(msg_id, text)))

    def _send(self, peer: bytes, payload: bytes) -> None:
        """Send one reply; hold it when the peer is at its high-water mark, drop it if the peer is gone."""
        def send(end: ChildEnd) -> None:
            try:
                if not end.send_nowait(peer, payload):
                    self._backlog.append((peer, payload))
            except TransportError as exc:
                log.warning("dropped a reply to peer %s: %s", peer.hex(), exc)
        self._with_end(send)

    def send_output(self, stream: str, text: str) -> None:
        """Send printed text to every parent this worker has heard from (best effort)."""
        payload = pack_message(protocol.output(stream, text))
        if self._end is None:
            self._early_output.append(payload)
            return

        def send(end: ChildEnd) -> None:
            if end.peers:
                end.send_all(payload)
            else:
                self._early_output.append(payload)  # nobody to send to yet: keep it
        self._with_end(send)

    def _with_end(self, operation: Callable[[ChildEnd], Any]) -> None:
        """Run a send under the I/O lock, from any thread.

        Off the loop thread, drain what the send made ready and hand it to the loop: the
        fd is edge-triggered, so the loop might not wake for it.
        """
        end = self._end
        if end is None:
            log.warning("dropped a message: the worker is not serving")
            return
        items = []
        with self._io_lock:
            operation(end)
            if threading.get_ident() != self._loop_thread:
                while True:
                    item = end.recv_nowait()
                    if item is None:
                        break
                    items.append(item)
        if items:
            self._loop.call_soon_threadsafe(self._handle_batch, items)


async def _await(awaitable):
    return await awaitable
