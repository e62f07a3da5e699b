"""The process's ZeroMQ context, and binding an endpoint this process may have just released.

One context per process (inproc needs a shared one; a forked child makes its own).
ZeroMQ closes listeners in its I/O thread a moment after ``close()`` returns, so a bind of
an endpoint this process released retries briefly on "address in use"; closing a bound ipc
end removes its socket file, which libzmq leaves behind.
"""
from __future__ import annotations

import errno
import os
import threading
import time

import zmq

from . import Endpoint

#: How long a bind waits for a listener this process closed itself to go away.
RELEASE_GRACE = 2.0

_context_lock = threading.Lock()
_context: zmq.Context | None = None
_context_pid = 0
#: Endpoints this process unbound recently -> until when a bind may wait for them.
_released: dict[str, float] = {}


def _shared_context() -> zmq.Context:
    """One context per process (inproc needs it); a forked child makes its own."""
    global _context, _context_pid
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            _context = zmq.Context()
            _context_pid = os.getpid()
        return _context


def shutdown() -> None:
    """Terminate this process's context: blocks until messages closed ends left queued
    (within their linger) have gone. Call it last, before the process exits."""
    global _context
    with _context_lock:
        if _context is not None and _context_pid == os.getpid():
            _context.term()
        _context = None


def _bind(sock: zmq.Socket, endpoint: Endpoint) -> str:
    """Bind, asking ZeroMQ for a free port when the port is 0; returns the resolved endpoint."""
    url = str(endpoint)
    if endpoint.scheme == "tcp" and endpoint.port == 0:
        host = f"[{endpoint.host}]" if ":" in (endpoint.host or "") else endpoint.host
        sock.bind(f"tcp://{host}:*")
    else:
        until = _released.get(url)
        while True:
            try:
                sock.bind(url)
                break
            except zmq.ZMQError as exc:
                if exc.errno != errno.EADDRINUSE or until is None or time.monotonic() > until:
                    raise
                time.sleep(0.002)  # our own listener at this address is still closing
        _released.pop(url, None)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _remove_socket_file(path: str) -> None:
    """Remove a closed ipc listener's socket file (libzmq 4.3 leaves it behind)."""
    if path.startswith("@"):  # Linux abstract namespace: no file
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
