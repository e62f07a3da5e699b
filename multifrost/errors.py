"""The exceptions multifrost raises; every one is a MultifrostError."""
from __future__ import annotations

_TRACEBACK_MARK = "\nTraceback (most recent call last):"


class MultifrostError(Exception):
    """Base class of every error this library raises."""


class PayloadError(MultifrostError, ValueError):
    """A value cannot cross the wire (unsupported type, int out of range, cycle, ...).

    Raised in the sender before anything is sent; the message names the value's path.
    """


class ProtocolError(MultifrostError):
    """Bytes from a peer are not a valid Multifrost message (garbage, truncated, over a limit)."""


class TransportError(MultifrostError):
    """A transport could not be set up or used."""


class TransportClosed(TransportError):
    """The transport end was closed (by this side) while an operation waited on it."""


class RemoteCallError(MultifrostError):
    """The remote method raised, or the worker answered the call with ERROR.

    ``str()`` is the remote message; ``remote_type`` and ``remote_traceback`` hold the rest
    when the worker sent them (a Python worker does, a JavaScript one sends the message only).
    """

    def __init__(self, message: str, remote_type: str | None = None, remote_traceback: str | None = None):
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    @classmethod
    def from_wire(cls, text: str) -> "RemoteCallError":
        """Read a wire error text: ``"Type: message\nTraceback ..."`` from a Python worker,
        the bare message from others (a JavaScript worker's ``"ENOENT: no file"`` stays whole)."""
        head, marker, tail = text.partition(_TRACEBACK_MARK)
        if not marker:
            return cls(text)
        remote_type = None
        type_name, sep, rest = head.partition(": ")
        if sep and " " not in type_name and type_name.replace(".", "").replace("_", "").isalnum():
            remote_type, head = type_name, rest
        return cls(head, remote_type=remote_type, remote_traceback=(marker + tail).lstrip("\n"))


class WorkerCrashedError(MultifrostError):
    """The worker process died while the call was in flight.

    Not a RemoteCallError: the remote method raised nothing, its process went away.

    ``exit_code`` is the exit status (negative: killed by that signal); ``stderr_tail``
    holds the last lines the child wrote to stderr.
    """

    def __init__(self, message: str, exit_code: int | None = None, stderr_tail: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class CallTimeoutError(MultifrostError, TimeoutError):
    """No reply arrived within the call's timeout."""


class CircuitOpenError(MultifrostError):
    """The circuit breaker is open: the call failed at once and nothing was sent."""


class WorkerStartError(MultifrostError):
    """The worker could not be started: it exited, never connected, or could not be run."""

    def __init__(self, message: str, exit_code: int | None = None, stderr_tail: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class ServiceNotFoundError(MultifrostError, LookupError):
    """No live service is registered under the id (connect mode)."""


class AuthenticationError(TransportError):
    """The service refused this client's security handshake (CURVE key not authorized, wrong
    server key, or one side uses CURVE and the other not)."""


class RegistryError(MultifrostError):
    """The service registry could not be read, locked or written, or the id is taken."""
