"""multifrost: call methods of worker processes as if they were local functions."""
from .errors import (
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

from .child import ChildWorker
from .current_call import CallContext, current_call
from .parent import ParentWorker
from .pool import WorkerPool

__all__ = [
    "CallContext", "CallTimeoutError", "ChildWorker", "CircuitOpenError", "MultifrostError", "ParentWorker", "PayloadError",
    "ProtocolError", "RegistryError", "RemoteCallError", "ServiceNotFoundError", "TransportClosed",
    "TransportError", "WorkerCrashedError", "WorkerPool", "WorkerStartError", "current_call",
]
