"""Which sends on a reader's event loop wait for the end of the loop's turn: the rule the ``unix``
and ZeroMQ corks share (``unix_cork``, ``zeromq_cork``).

An end whose reader runs on an event loop (``set_reader`` with ``soon``) may put off a send made in
that loop's thread: the first since the last flush goes at once (a lone call waits for nothing, and
the peer starts on a burst before it ends), later ones wait for a flush queued with ``soon``, which
runs before the loop next waits. A send from any other thread, or once that loop is closed, goes at
once; its owner first sends what waits, so order holds.
"""
from __future__ import annotations

import threading
from typing import Callable

_get_ident = threading.get_ident


class Turn:
    """The turn rule for one end; ``flush`` (the owner's) sends what waits as the turn ends."""

    __slots__ = ("_flush", "_soon", "_thread", "_queued", "_went")

    def __init__(self, flush: Callable[[], object]) -> None:
        self._flush = flush
        self._soon: Callable[[Callable[[], None]], object] | None = None
        self._thread = -1  # the reader's loop thread: sends there may wait
        self._queued = False  # a flush is queued with _soon
        self._went = False  # a send on the loop went at once since the last flush

    def on_loop(self, soon: Callable[[Callable[[], None]], object] | None) -> None:
        """Sends in this thread may wait for a flush queued with ``soon`` (None: none waits from now)."""
        self._soon, self._queued = soon, False  # a flush queued with an earlier soon may never run
        self._thread = _get_ident() if soon is not None else -1

    def wait(self, hold: bool = False) -> bool:
        """Whether a send made now waits (on the loop, a flush is then queued for the turn's end).
        ``hold``: it waits anyway, not being the first changes nothing (a unix reader mid-drain)."""
        on_loop = self._thread == _get_ident()
        if not hold and not (on_loop and self._went):
            self._went = on_loop
            return False
        if on_loop and not self._queued:
            try:
                self._soon(self._turn_ended)  # type: ignore[misc]  # set with _thread
            except RuntimeError:  # the reader's loop is closed: nothing would run the flush
                self.on_loop(None)
                return False
            self._queued = True
        return True

    def flushed(self) -> None:
        """What waited has gone: the next send on the loop is the first again."""
        self._went = False

    def _turn_ended(self) -> None:
        self._queued = False
        self._flush()
