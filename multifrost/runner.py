"""Running a ChildWorker as a process: pick the mode from the environment, wire signals,
forward printed output to the parent, register the service (connect mode), serve, clean up.

``run()`` may also be called from any thread (a service beside a web app, in a notebook):
there no signal handlers are installed (``stop()`` ends it) and the process-wide ZeroMQ
context is left alone."""
from __future__ import annotations

import io
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, NoReturn

from . import protocol
from . import transports
from .child_loop import PollLoop
from .errors import RegistryError
from .parent_watch import ParentWatch
from .spawn_env import ENDPOINT_ENV, PORT_ENV
from .transports import open_child_end

if TYPE_CHECKING:
    from .child import ChildWorker

log = logging.getLogger(__name__)

FLUSH_LINGER = 1.0  # seconds the last replies may take to leave when the worker stops


class OutputStream(io.TextIOBase):
    """A text stream that sends what is written, a line at a time, as STDOUT/STDERR messages."""

    def __init__(self, worker: ChildWorker, stream: str) -> None:
        super().__init__()
        self._worker = worker
        self._stream = stream
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]  # read-only here: always UTF-8
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._pending += text
        if "\n" in text:
            head, sep, self._pending = self._pending.rpartition("\n")
            self._worker.send_output(self._stream, head + sep)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            self._worker.send_output(self._stream, text)


def fatal(text: str) -> NoReturn:
    """Exit at once with a ``FATAL:`` line on stderr, as the protocol asks of a child."""
    sys.stderr.write(f"FATAL: {text}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def spawn_endpoint() -> str | None:
    """The endpoint the spawning parent gave us, or None when not spawned."""
    port = os.environ.get(PORT_ENV)
    if port is not None:
        try:
            number = int(port)
        except ValueError:
            number = -1
        if not 1024 <= number <= 65535:
            fatal(f"{PORT_ENV}={port!r} is not a port number in 1024..65535")
        return f"tcp://127.0.0.1:{number}"
    return os.environ.get(ENDPOINT_ENV) or None


def run_worker(worker: ChildWorker) -> None:
    """Serve ``worker`` in this process until it is told to stop; see ChildWorker.run."""
    main = threading.current_thread() is threading.main_thread()
    try:
        if worker.service_id is not None:
            _run_service(worker, main)
        else:
            _run_spawned(worker)
    finally:
        if main:  # the process is about to exit: let the last replies leave
            transports.shutdown()
    if worker._stuck_calls and main:
        # Plain methods still blocked in pool threads would hold the interpreter's exit
        # (it joins them) past the grace; their callers have been answered already.
        log.warning("exiting with %d call(s) still running", worker._stuck_calls)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)


def _run_spawned(worker) -> None:
    endpoint = spawn_endpoint()
    if endpoint is None:
        fatal(f"not started by a parent: {PORT_ENV} or {ENDPOINT_ENV} must be set "
              f"(or give the worker a service_id to run it as a service)")
    try:
        end = open_child_end(endpoint, bind=False)
    except ValueError as exc:
        fatal(str(exc))
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = OutputStream(worker, protocol.STDOUT), OutputStream(worker, protocol.STDERR)
    watch = ParentWatch(os.getppid(), lambda: _orphaned(worker))
    try:
        _serve(worker, end)
    finally:
        watch.close()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = streams
        end.close(linger=0 if watch.gone else FLUSH_LINGER)


def _orphaned(worker) -> None:
    """The parent died: nobody waits for the calls in flight any more; stop without a grace."""
    worker.shutdown_grace = 0
    worker.stop()


def _run_service(worker, main: bool) -> None:
    from .service import ServiceConfigError, ServiceStopError, serving

    # SIGTERM/SIGINT wait until their handlers are in (_signals): one that came between registering
    # the service and serving it killed the process and left the service in the registry.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _signums())
    try:
        with serving(worker) as end:
            _serve(worker, end)
    except ServiceStopError as exc:  # the stop itself was clean: say so, exit 0
        _say(f"service {worker.service_id!r} stopped but could not unregister: {exc}")
    except (ServiceConfigError, RegistryError) as exc:
        if not main:
            raise  # the thread's caller decides
        _say(f"service {worker.service_id!r} cannot start: {exc}")
        raise SystemExit(1) from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _say(text: str) -> None:
    """One line on stderr, for what a service's user must act on (no traceback)."""
    sys.stderr.write(f"multifrost: {' '.join(text.split())}\n")
    sys.stderr.flush()


def _serve(worker, end) -> None:
    """Serve on asyncio when the worker has async methods, else on a PollLoop (no asyncio import)."""
    signums = _signums()
    if not worker._needs_asyncio():
        loop = PollLoop(spins=end.spins)
        try:
            with _signals(loop, signums, worker.stop):
                worker.serve_on(loop, end)
        finally:
            loop.close()
        return
    import asyncio

    async def main() -> None:
        with _signals(asyncio.get_running_loop(), signums, worker.stop):
            await worker.serve(end)

    if not hasattr(asyncio, "Runner"):  # Python 3.10: no loop factory, no spinning
        asyncio.run(main())
        return
    from .spin_loop import spinning_loop

    with asyncio.Runner(loop_factory=lambda: spinning_loop(end.spins)) as runner:
        runner.run(main())


def _signums() -> tuple:
    """The signals that stop a worker: handlers can only be installed from the main thread (elsewhere stop() ends it)."""
    return (signal.SIGTERM, signal.SIGINT) if threading.current_thread() is threading.main_thread() else ()


@contextmanager
def _signals(loop, signums, handler) -> Iterator[None]:
    """``handler`` runs on ``loop`` when one of ``signums`` arrives, while the block runs (one held
    back until now, see _run_service, arrives as the handlers are in)."""
    for signum in signums:
        loop.add_signal_handler(signum, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)
    try:
        yield
    finally:
        for signum in signums:
            loop.remove_signal_handler(signum)
