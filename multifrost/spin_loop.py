"""An asyncio loop whose selector spins a moment before sleeping (``spin.py``): for a worker with
async methods served over an end that spins. Imported only on that path (asyncio loads
``selectors`` anyway; a worker on the PollLoop never does)."""
from __future__ import annotations

import asyncio
import selectors

from .spin import Spinner


class SpinningSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's default selector, whose ``select`` spins first while that pays."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self._spinner = Spinner(enabled)

    def select(self, timeout: float | None = None) -> list:
        return self._spinner.poll(super().select, timeout)


def spinning_loop(enabled: bool) -> asyncio.AbstractEventLoop:
    """A new selector event loop that spins before it sleeps when ``enabled``."""
    return asyncio.SelectorEventLoop(SpinningSelector(enabled))
