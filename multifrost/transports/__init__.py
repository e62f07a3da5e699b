"""Transports: open a parent end (DEALER semantics) or a child end (ROUTER semantics) by URL.

Schemes:

- ``tcp://host:port``: ZeroMQ over TCP, the wire transport other Multifrost implementations
  speak. Bind ``tcp://127.0.0.1:0`` to get a free port (``end.endpoint`` then names it).
  Bind to loopback unless you mean to expose every public method to the network: an
  all-interfaces bind must say ``0.0.0.0`` (or ``::``) explicitly; ``*`` is refused.
- ``ipc:///path``: ZeroMQ over a Unix socket (the path must fit in ``sun_path``).
- ``inproc://name``: ZeroMQ within this process (one shared ZeroMQ context).
- ``memory://name``: pure Python within this process; works without libzmq.
- ``unix://PATH``: length-prefixed frames over a plain Unix stream socket, without ZeroMQ
  and without an I/O thread (the fastest way between Python processes on one machine; only
  Python peers speak it). Bind inside a private directory (mode 0700).

Options (keyword arguments of ``open_parent_end`` / ``open_child_end``):

- ``sndhwm`` / ``rcvhwm`` (default 1000 each): high-water marks, in messages, of the
  outgoing and incoming queues; a send at the mark is refused (``send_nowait`` -> False).
  0 means no limit.
- ``max_message_size`` (default 65 MiB: the 64 MiB payload limit plus 1 MiB slack): a
  larger incoming frame is refused (ZeroMQ: the connection carrying it is dropped;
  memory: the payload is dropped and logged; unix: the connection is dropped and logged).
- ``curve`` (default None; tcp only): a :class:`Curve` with this end's keys. With
  ``server_key`` set the end is a CURVE client of that server; without, a CURVE server,
  which admits only the clients in ``authorized_keys`` (None: any client that knows its
  public key). A connecting tcp parent end watches its handshakes: ``check()`` raises
  AuthenticationError once the service refused one (see :mod:`.curve`).

Only this package imports ``zmq``, and only when a ZeroMQ scheme is opened.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

from .base import ChildEnd, ParentEnd

__all__ = ["Curve", "Endpoint", "parse_endpoint", "open_parent_end", "open_child_end", "shutdown", "ParentEnd", "ChildEnd",
           "DEFAULT_HWM", "DEFAULT_MAX_MESSAGE_SIZE"]

DEFAULT_HWM = 1000
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024 + 1024 * 1024

#: Longest ipc path a Unix socket takes (``sun_path`` is 108 bytes on Linux, with the NUL).
_MAX_IPC_PATH = 107
_SCHEMES = ("tcp", "ipc", "inproc", "memory", "unix")


class Curve(NamedTuple):
    """CURVE keys of one end, Z85-encoded (40 bytes each). (NamedTuples here, not dataclasses:
    a worker's start-up need not load ``dataclasses``.)"""

    public_key: bytes
    secret_key: bytes
    server_key: bytes | None = None  # set: this end is a client of the server with this public key
    authorized_keys: frozenset[bytes] | None = None  # a server's admitted client keys (None: any)


def curve_keys() -> ModuleType:
    """The key-file helpers of :mod:`.curve` (imports ZeroMQ)."""
    from . import curve
    return curve


class Endpoint(NamedTuple):
    """A parsed transport URL: ``scheme`` plus ``host``/``port`` (tcp) or ``name`` (ipc path, inproc/memory name)."""

    scheme: str
    host: str | None = None
    port: int | None = None
    name: str | None = None

    def __str__(self) -> str:
        if self.scheme == "tcp":
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        return f"{self.scheme}://{self.name}"


def parse_endpoint(url: str) -> Endpoint:
    """Parse and check a transport URL; ValueError names the URL and what is wrong with it."""
    if not isinstance(url, str):
        raise ValueError(f"endpoint {url!r}: must be a string like tcp://127.0.0.1:5555")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"endpoint {url!r}: missing scheme (expected one of {', '.join(s + '://' for s in _SCHEMES)})")
    if scheme not in _SCHEMES:
        raise ValueError(f"endpoint {url!r}: unknown scheme {scheme!r} (expected one of {', '.join(_SCHEMES)})")
    if scheme == "tcp":
        return _parse_tcp(url, rest)
    is_path = scheme in ("ipc", "unix")
    if not rest:
        raise ValueError(f"endpoint {url!r}: empty {'path' if is_path else 'name'}")
    if is_path:
        if rest == "*":
            raise ValueError(f"endpoint {url!r}: give the {scheme} socket an explicit path")
        if "\0" in rest:
            raise ValueError(f"endpoint {url!r}: NUL character in the {scheme} path")
        if scheme == "unix" and rest.startswith("@"):
            raise ValueError(f"endpoint {url!r}: abstract sockets are not accepted (anyone on the host could "
                             "connect); give a path in a private directory")
        size = len(rest.encode())
        if size > _MAX_IPC_PATH:
            raise ValueError(
                f"endpoint {url!r}: {scheme} path is {size} bytes, too long for a Unix socket (at most {_MAX_IPC_PATH})"
            )
    return Endpoint(scheme, name=rest)


def _parse_tcp(url: str, rest: str) -> Endpoint:
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"endpoint {url!r}: malformed IPv6 address (expected tcp://[addr]:port)")
        has_port, port_text = bool(port_text), port_text[1:]
        import ipaddress  # only for bracketed addresses: a worker's start-up need not pay for it

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"endpoint {url!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = rest.rpartition(":")
        has_port = bool(colon)
        if not has_port:
            host = rest
        elif ":" in host:
            raise ValueError(f"endpoint {url!r}: an IPv6 address must be in brackets, e.g. tcp://[::1]:5555")
    if host == "*":
        raise ValueError(f"endpoint {url!r}: host '*' is not accepted; use 0.0.0.0 explicitly to bind all interfaces")
    if not host:
        raise ValueError(f"endpoint {url!r}: missing host")
    if not has_port or not port_text:
        raise ValueError(f"endpoint {url!r}: missing port (tcp://host:port; port 0 binds a free port)")
    if not port_text.isdigit():
        raise ValueError(f"endpoint {url!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"endpoint {url!r}: port {port} is out of range 0..65535")
    if "/" in host or any(c.isspace() for c in host):
        raise ValueError(f"endpoint {url!r}: {host!r} is not a host name or address")
    return Endpoint("tcp", host=host, port=port)


def _options(url: str, options: dict) -> dict:
    unknown = set(options) - {"sndhwm", "rcvhwm", "max_message_size", "curve"}
    if unknown:
        raise TypeError(f"unknown transport option(s) for {url}: {', '.join(sorted(unknown))}")
    curve = options.get("curve")
    if curve is not None and not (isinstance(curve, Curve) and url.startswith("tcp://")):
        raise ValueError(f"transport option curve={curve!r} for {url}: must be a Curve, on tcp only")
    resolved = {
        "sndhwm": options.get("sndhwm", DEFAULT_HWM),
        "rcvhwm": options.get("rcvhwm", DEFAULT_HWM),
        "max_message_size": options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE),
    }
    for key, value in resolved.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"transport option {key}={value!r} for {url}: must be an int >= 0")
    if curve is not None:
        resolved["curve"] = curve
    return resolved


def _checked(url: str, bind: bool) -> Endpoint:
    endpoint = parse_endpoint(url)
    if endpoint.scheme == "tcp" and not bind and endpoint.port == 0:
        raise ValueError(f"endpoint {url!r}: port 0 only makes sense for bind; connect needs the real port")
    return endpoint


def open_parent_end(url: str, *, bind: bool, **options: Any) -> ParentEnd:
    """Open the parent (DEALER) end of a transport at ``url``, binding or connecting."""
    endpoint = _checked(url, bind)
    resolved = _options(url, options)
    if endpoint.scheme == "memory":
        from .memory import MemoryParentEnd

        return MemoryParentEnd(endpoint.name or "", bind=bind, **resolved)
    if endpoint.scheme == "unix":
        from .unix import UnixParentEnd

        return UnixParentEnd(endpoint, bind=bind, **resolved)
    from .zeromq import ZmqParentEnd

    return ZmqParentEnd(endpoint, bind=bind, **resolved)


def shutdown() -> None:
    """Let queued messages of ends closed with a linger leave, then release ZeroMQ (if it was used)."""
    import sys
    zeromq = sys.modules.get(f"{__name__}.zeromq")
    if zeromq is not None:
        zeromq.shutdown()


def open_child_end(url: str, *, bind: bool, **options: Any) -> ChildEnd:
    """Open the child (ROUTER) end of a transport at ``url``, binding or connecting."""
    endpoint = _checked(url, bind)
    resolved = _options(url, options)
    if endpoint.scheme == "memory":
        from .memory import MemoryChildEnd

        return MemoryChildEnd(endpoint.name or "", bind=bind, **resolved)
    if endpoint.scheme == "unix":
        from .unix import UnixChildEnd

        return UnixChildEnd(endpoint, bind=bind, **resolved)
    from .zeromq import ZmqChildEnd

    return ZmqChildEnd(endpoint, bind=bind, **resolved)
