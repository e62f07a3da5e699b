"""The watchdog thread: keeps a worker responsive while a plain method run inline holds its loop.

Once the loop has been busy in one method for ``TAKEOVER`` seconds, the watchdog runs the
worker's reader (``ChildWorker._serve_ready``) until the method returns. It looks every
``TAKEOVER`` seconds while methods run inline; after ``PARK`` seconds without an inline run (an
idle worker, or one whose calls all go to the pool or run as tasks) it sleeps until the next
inline run wakes it, instead of waking 100 times a second for nothing.
"""
from __future__ import annotations

import select
import threading
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .child import ChildWorker

TAKEOVER = 0.01  # seconds a plain method may hold the loop before the watchdog serves the socket
PARK = 0.5  # seconds without an inline run after which the watchdog sleeps until the next one


class Watchdog:
    """One serving worker's watchdog thread. The loop calls ``busy()`` as an inline run begins
    while ``idle`` is set (at most once a look: the look sets it again)."""

    def __init__(self, worker: ChildWorker) -> None:
        self._worker = worker
        self._wake = threading.Event()  # set to stop it, or by busy() while it is parked
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.idle = False  # no inline run began since the last look
        self.parked = False

    def start(self, end_fd: int, wakeup_fd: int) -> None:
        """Watch while the worker serves the end ``end_fd`` (and its wake-up ``wakeup_fd``)."""
        self._stopped, self.idle, self.parked = False, False, False
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, args=(end_fd, wakeup_fd), name="multifrost-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (serving has stopped) and wait for it."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def busy(self) -> None:
        """On the loop, as an inline run begins after a look: a parked watchdog looks again."""
        self.idle = False
        if self.parked:
            self.parked = False
            self._wake.set()

    def _run(self, end_fd: int, wakeup_fd: int) -> None:
        worker = self._worker
        poller = select.poll()
        poller.register(end_fd, select.POLLIN)
        poller.register(wakeup_fd, select.POLLIN)
        last_run = monotonic()
        while not self._stopped:
            since = worker._inline_since
            if since is None or monotonic() - since < TAKEOVER:
                if not self.idle or since is not None:
                    last_run = monotonic()
                elif monotonic() - last_run >= PARK:
                    self._park()
                    last_run = monotonic()
                    continue
                self.idle = True
                if self._wake.wait(TAKEOVER):  # a late busy() after _park, or stop(): look again
                    self._wake.clear()
                continue
            worker._io.uncork()  # replies the loop's pass kept back must not wait for the method
            worker._serve_ready()
            if any(fd == wakeup_fd for fd, _ in poller.poll(TAKEOVER * 1000)):
                worker._io.clear_wakeup()  # then read at once: the loop may be free again, and the
                worker._serve_ready()  # loop's own pass for this wake-up may have run already

    def _park(self) -> None:
        """Sleep until busy() or stop(); a run that began meanwhile (idle cleared) ends it at once."""
        self._wake.clear()
        self.parked = True
        if self.idle and not self._stopped:
            self._wake.wait()
        self.parked = False
        self._wake.clear()
