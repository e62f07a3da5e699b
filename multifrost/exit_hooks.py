"""Stopping children when the parent process exits: on SIGINT/SIGTERM (chained to the
handler that was there before, never replacing it) and at interpreter exit.

Only in the process that started them: a process forked from it forgets the workers at
once (``os.register_at_fork``), so that its exit or its signals stop nothing of its parent's."""
from __future__ import annotations

import atexit
import itertools
import logging
import os
import signal
import threading
import weakref
from typing import Any, Protocol

from .process import ChildProcess, stop_processes

log = logging.getLogger(__name__)

STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for children stopped at exit


class Tracked(Protocol):
    def _exit_now(self) -> ChildProcess | None:
        """Stop restarting; return the child process to stop, if there is one."""

    def _forked(self) -> None:
        """This is a forked copy of the process that started the worker: refuse to be used."""


_live: dict[int, weakref.ref] = {}  # started, not yet closed workers
_keys = itertools.count()
_lock = threading.Lock()
_atexit_installed = False
_signals_installed = False
_previous_handlers: dict[int, Any] = {}
_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Each forking thread's signal mask while ours holds SIGINT/SIGTERM (fork hooks of two threads may overlap).
_masks_before_fork: dict[int, set[Any]] = {}


def track(worker: Tracked) -> int:
    """Note a started worker so that its child is stopped when this process exits."""
    key = next(_keys)
    _live[key] = weakref.ref(worker, lambda _ref: _live.pop(key, None))
    _install()
    return key


def untrack(key: int | None) -> None:
    """The worker was closed: nothing to stop for it any more."""
    if key is not None:
        _live.pop(key, None)


def _install() -> None:
    """Once: an atexit hook; and, from the main thread only, SIGINT/SIGTERM handlers that
    stop the children and then run the handler that was there before (chained, not replaced)."""
    global _atexit_installed, _signals_installed
    with _lock:
        if not _atexit_installed:
            atexit.register(stop_live_children)
            _atexit_installed = True
        if _signals_installed or threading.current_thread() is not threading.main_thread():
            return
        _signals_installed = True
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN or previous is None:
                continue  # ignored on purpose, or owned by code outside Python: leave it alone
            try:
                signal.signal(signum, _on_exit_signal)
            except (ValueError, OSError) as exc:  # not the main interpreter, say
                log.debug("cannot handle signal %d: %s", signum, exc)
                continue
            _previous_handlers[signum] = previous


def _on_exit_signal(signum: int, frame) -> None:
    """SIGINT/SIGTERM: stop every live worker's child, then do what the previous handler did.

    On SIGINT the children get SIGTERM at once and a thread gives them the grace and SIGKILL,
    so that KeyboardInterrupt reaches the interrupted code without waiting for them."""
    if signum == signal.SIGINT:
        processes = _exiting_children()
        for process in processes:
            process.terminate()
        if processes:
            threading.Thread(target=stop_processes, args=(processes, STOP_GRACE), name="multifrost-reaper",
                             daemon=True).start()
    else:
        stop_live_children()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:  # SIG_DFL: die of the signal, as the process would have without us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def stop_live_children() -> None:
    """The process is exiting: SIGTERM every live worker's child (SIGKILL after a grace) and
    keep the workers from restarting them. Takes no lock a caller might hold."""
    processes = _exiting_children()
    if processes:
        log.info("stopping %d worker process(es): this process is exiting", len(processes))
        stop_processes(processes, STOP_GRACE)


def _exiting_children() -> list[ChildProcess]:
    """Tell every live worker that this process is exiting; their child processes."""
    processes = []
    for ref in list(_live.values()):
        worker = ref()
        if worker is None:
            continue
        process = worker._exit_now()
        if process is not None:
            processes.append(process)
    return processes


def _hold_signals_for_fork() -> None:
    """Before fork(), while our handlers are installed: block SIGINT/SIGTERM in the forking thread.

    The new process starts with our handlers; one of these signals arriving before
    ``_forget_after_fork`` put the previous handlers back would be dropped by CPython (its
    handler is gone when the interpreter looks), and a forked pool worker would ignore the
    SIGTERM of ``Pool.terminate()``. Blocked, it waits and meets the restored handler."""
    if _previous_handlers:
        _masks_before_fork[threading.get_ident()] = signal.pthread_sigmask(signal.SIG_BLOCK, _EXIT_SIGNALS)


def _release_signals_after_fork() -> None:
    """After fork(), in both processes: the forking thread's mask as it was; what was held is delivered."""
    mask = _masks_before_fork.pop(threading.get_ident(), None)
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _forget_after_fork() -> None:
    """In the child of a fork(): the live workers belong to the parent process. Mark each as
    unusable here and forget them all, so that nothing here ever stops the parent's children."""
    global _lock, _signals_installed
    _lock = threading.Lock()  # another thread may have held it at the fork
    try:
        for ref in list(_live.values()):
            worker = ref()
            if worker is not None:
                worker._forked()
        _live.clear()
        # Our handlers go too: a Python-level handler runs only when the main thread gets back to
        # the interpreter, so a forked process blocked in C (a pool worker waiting on its queue)
        # would not die of the SIGTERM that Pool.terminate() sends it.
        for signum, previous in list(_previous_handlers.items()):
            try:
                if signal.getsignal(signum) is _on_exit_signal:
                    signal.signal(signum, previous)
            except (ValueError, OSError, TypeError):
                continue
        _previous_handlers.clear()
        _signals_installed = False
    finally:
        _release_signals_after_fork()
        _masks_before_fork.clear()  # other threads' forks: those threads are not in this process


os.register_at_fork(before=_hold_signals_for_fork, after_in_parent=_release_signals_after_fork,
                    after_in_child=_forget_after_fork)
