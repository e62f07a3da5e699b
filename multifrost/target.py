"""What a ParentWorker needs from the place its worker lives (a spawned process, a registered
service, this process): one typing.Protocol, so the parent never switches on the target's class."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from .process import ChildProcess
    from .transports import ParentEnd


class Target(Protocol):
    """Opens the parent end to a worker and says where it is; ``targets.py`` has the three kinds."""

    #: Short name for logs (the script's file name, the service id, the worker's class).
    name: str
    #: True for a registered service, which may stop and start again elsewhere (see ``moved``).
    relocatable: bool

    @property
    def service_id(self) -> str | None:
        """The registered id (connect mode), else None."""
        ...

    def describe(self) -> str:
        """The worker in words, for error messages."""
        ...

    def open(self) -> tuple[ParentEnd, ChildProcess | None]:
        """Start or find the worker and open the end to it (sync API); the child process if spawned."""
        ...

    async def aopen(self) -> tuple[ParentEnd, ChildProcess | None]:
        """``open`` for the async API."""
        ...

    def moved(self) -> bool:
        """Whether the worker is gone or now lives elsewhere (always False unless ``relocatable``)."""
        ...

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Call ``on_lost`` (from a thread) whenever the worker in use leaves its registry; a no-op
        where nothing can tell that sooner than a heartbeat."""
        ...

    def close(self) -> None:
        """Release what ``open`` left behind (sync API)."""
        ...

    async def aclose(self) -> None:
        """``close`` for the async API."""
        ...
