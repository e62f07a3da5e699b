"""Spawn mode: end this worker within a second of its parent's death, whatever it is running.

A thread waits on a pidfd of the parent process (where there is none, it looks at
``os.getppid()`` five times a second). It does not rely on the event loop, which a method may
be blocking: it asks the worker to stop at once, and if serving has not ended ``GRACE`` seconds
later it ends the process itself. The processes this worker started in its session (it leads
one when a multifrost parent spawned it) get SIGTERM at once and SIGKILL when the worker exits.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
from typing import Callable

log = logging.getLogger(__name__)

GRACE = 0.5  # seconds serving may take to end after the parent died, before the process ends itself
_POLL_MS = 200  # without a pidfd: how often to look at getppid()


class ParentWatch:
    """Watch ``parent_pid`` from a thread; ``on_gone`` (called in that thread) stops the worker."""

    def __init__(self, parent_pid: int, on_gone: Callable[[], None]) -> None:
        self.parent_pid = parent_pid
        self.gone = False
        self._on_gone = on_gone
        self._served = threading.Event()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="multifrost-parent-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Serving ended: stop watching; if the parent is gone, end the rest of the session."""
        self._served.set()
        os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        if self.gone:
            signal_session(signal.SIGKILL)

    def _run(self) -> None:
        if not self._wait_for_death():
            return
        self.gone = True
        log.warning("parent process %d is gone; stopping", self.parent_pid)
        signal_session(signal.SIGTERM)
        self._on_gone()
        if self._served.wait(GRACE):
            return
        log.warning("still busy %s s after the parent died: exiting now", GRACE)
        signal_session(signal.SIGKILL)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a stream that forwards to the dead parent, say
                pass
        os._exit(1)

    def _wait_for_death(self) -> bool:
        """Block until the parent dies (True) or close() is called (False)."""
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        pidfd = _pidfd(self.parent_pid)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        try:
            while os.getppid() == self.parent_pid:
                ready = {fd for fd, _ in poller.poll(None if pidfd is not None else _POLL_MS)}
                if self._stop_r in ready:
                    return False
                if pidfd in ready:
                    return True
            return True
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here, or the parent is gone already
        return None


def signal_session(signum: int) -> None:
    """Send ``signum`` to every other process of the session this process leads (none when it
    leads none: then its process group is its parent's, which is not ours to signal)."""
    me = os.getpid()
    if os.getsid(0) != me:
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == me:  # field 6 of stat: the session id
                os.kill(int(entry), signum)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours
