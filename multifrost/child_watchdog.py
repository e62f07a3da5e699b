"""The watchdog thread: keeps a worker responsive while a plain method run inline holds its loop.

Once the loop has been busy in one method for ``TAKEOVER`` seconds, the watchdog runs the
worker's reader (``ChildWorker._serve_ready``) until the method returns; it sleeps otherwise.
"""
from __future__ import annotations

import select
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .child import ChildWorker

TAKEOVER = 0.01  # seconds a plain method may hold the loop before the watchdog serves the socket


def watch(worker: ChildWorker, end_fd: int, wakeup_fd: int) -> None:
    """The watchdog thread's body, while ``worker`` serves the end ``end_fd`` (and its wake-up)."""
    poller = select.poll()
    poller.register(end_fd, select.POLLIN)
    poller.register(wakeup_fd, select.POLLIN)
    while worker._serving.is_set():
        since = worker._inline_since
        if since is None or monotonic() - since < TAKEOVER:
            if worker._watch_stop.wait(TAKEOVER):
                return
            continue
        worker._serve_ready()
        if any(fd == wakeup_fd for fd, _ in poller.poll(TAKEOVER * 1000)):
            worker._io.clear_wakeup()  # then read at once: the loop may be free again, and the
            worker._serve_ready()  # loop's own pass for this wake-up may have run already
