"""multifrost: call methods of worker processes as if they were local functions."""
from typing import TYPE_CHECKING

from .current_call import CallContext, current_call
from .errors import (
    AuthenticationError,
    CallTimeoutError,
    CircuitOpenError,
    MultifrostError,
    PayloadError,
    ProtocolError,
    RegistryError,
    RemoteCallError,
    ServiceNotFoundError,
    TransportClosed,
    TransportError,
    WorkerCrashedError,
    WorkerStartError,
)

__version__ = "0.1.0"

#: Loaded on first use, so that a worker process (which needs only ChildWorker) does not pay
#: for importing the parent side at start-up.
_LAZY = {"ChildWorker": ".child", "ParentWorker": ".parent", "WorkerOptions": ".options", "WorkerPool": ".pool"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # the names above, for type checkers and IDEs
    from .child import ChildWorker  # noqa: F401
    from .options import WorkerOptions  # noqa: F401
    from .parent import ParentWorker  # noqa: F401
    from .pool import WorkerPool  # noqa: F401

__all__ = [
    "AuthenticationError", "CallContext", "CallTimeoutError", "ChildWorker", "CircuitOpenError", "MultifrostError",
    "ParentWorker", "PayloadError",
    "ProtocolError", "RegistryError", "RemoteCallError", "ServiceNotFoundError", "TransportClosed",
    "TransportError", "WorkerCrashedError", "WorkerOptions", "WorkerPool", "WorkerStartError", "current_call",
]
