"""CURVE security for the ZeroMQ ends: key files, the ZAP handler, what a refused handshake means.

Keys live in ZeroMQ's certificate files (``NAME.key``: public key; ``NAME.key_secret``:
both keys, mode 0600), read and written with ``zmq.auth``. Every CURVE server gets a ZAP
domain of its own with the client keys it admits (or any); one ZAP handler thread per
process (RFC 27, started with the first server, stopped with the last) answers the
handshakes of every domain. A connecting end's socket monitor reports a handshake the
service refused (see zeromq.py); ``refusal`` turns that into an AuthenticationError.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from ..errors import AuthenticationError, TransportError
from . import Curve

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_MISMATCH = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
_UNEXPLAINED_FAILURES = 2  # handshakes closed without detail in a row before that is called a refusal


# -- key files ------------------------------------------------------------------------------


def write_keypair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new keypair as ``PATH.key`` and ``PATH.key_secret`` (0600); never overwrites."""
    base = Path(path)
    public, secret = base.with_name(base.name + ".key"), base.with_name(base.name + ".key_secret")
    for existing in (public, secret):
        if existing.exists():
            raise FileExistsError(f"{existing} exists; remove it first or choose another PATH")
    with tempfile.TemporaryDirectory(dir=base.parent, prefix=".multifrost-keygen-") as scratch:
        made_public, made_secret = zmq.auth.create_certificates(scratch, "key")
        os.chmod(made_secret, 0o600)
        os.link(made_secret, secret)
        os.link(made_public, public)
    return public, secret


def load_keypair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` certificate file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CURVE key file {path}: {exc}") from None
    if not secret:
        raise ValueError(f"{path} holds no secret key: give the .key_secret file")
    return public, secret


def load_public_key(spec: str | bytes | os.PathLike[str]) -> bytes:
    """A Z85 public key given as itself (40 characters) or as the path of a certificate file."""
    if isinstance(spec, (str, bytes)) and len(spec) == 40 and not os.path.exists(spec):
        key = spec.encode() if isinstance(spec, str) else spec
        try:
            z85.decode(key)
        except (ValueError, KeyError, IndexError):
            raise ValueError(f"{spec!r} is not a Z85 CURVE public key") from None
        return key
    try:
        return zmq.auth.load_certificate(os.fsdecode(spec))[0]
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CURVE public key {spec!r}: {exc}") from None


def load_authorized_keys(directory: str | os.PathLike[str]) -> frozenset[bytes]:
    """The Z85 public keys of the ``*.key`` files in ``directory``."""
    if not os.path.isdir(directory):
        raise ValueError(f"CURVE authorized keys directory {directory} does not exist")
    return frozenset(zmq.auth.load_certificates(directory))


def new_keypair() -> tuple[bytes, bytes]:
    """A fresh (public, secret) Z85 keypair, for a client that needs no fixed identity."""
    return zmq.curve_keypair()


# -- sockets --------------------------------------------------------------------------------


def apply(sock: zmq.Socket, curve: Curve, *, bind: bool) -> str | None:
    """Set the CURVE options on ``sock``; a server gets a ZAP domain of its own (returned).

    Every CURVE server is answered by the handler, even one that admits any client: once a
    ZAP handler runs in the context, libzmq asks it about every CURVE handshake."""
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public_key)
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
    if curve.server_key is not None:
        if bind:
            raise TransportError("a CURVE client (server_key set) must connect, not bind")
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_key)
        return None
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    domain = _zap.add(sock.context, curve.authorized_keys)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    return domain


def release(domain: str | None) -> None:
    """Forget a closed server's ZAP domain (the handler stops with the last one)."""
    if domain is not None:
        _zap.remove(domain)


class _ZapHandler:
    """Answers ZAP requests for every authorized-keys domain of this process, in one thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._domains: dict[str, frozenset[bytes] | None] = {}  # None: any CURVE client
        self._numbers = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stop_sender: zmq.Socket | None = None

    def add(self, context: zmq.Context, keys: frozenset[bytes] | None) -> str:
        with self._lock:
            domain = f"multifrost-{os.getpid()}-{next(self._numbers)}"
            self._domains[domain] = None if keys is None else frozenset(z85.decode(k) for k in keys)
            if self._thread is None:
                self._start(context)
            return domain

    def remove(self, domain: str) -> None:
        with self._lock:
            self._domains.pop(domain, None)
            if self._domains or self._thread is None:
                return
            thread, sender = self._thread, self._stop_sender
            self._thread = self._stop_sender = None
        assert sender is not None
        sender.send(b"")
        thread.join()
        sender.close(linger=0)

    def _start(self, context: zmq.Context) -> None:
        control = f"inproc://multifrost-zap-stop-{id(self)}-{next(self._numbers)}"
        reply = context.socket(zmq.REP)
        stop = context.socket(zmq.PAIR)
        try:
            _bind_again(reply, ZAP_ENDPOINT)
            stop.bind(control)
            self._stop_sender = context.socket(zmq.PAIR)
            self._stop_sender.connect(control)
        except zmq.ZMQError as exc:
            for sock in (reply, stop, self._stop_sender):
                if sock is not None:
                    sock.close(linger=0)
            self._stop_sender = None
            raise TransportError(f"cannot start the ZAP handler: {exc}") from exc
        self._thread = threading.Thread(target=self._serve, args=(reply, stop), name="multifrost-zap", daemon=True)
        self._thread.start()

    def _serve(self, reply: zmq.Socket, stop: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(reply, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if stop in ready:
                    return
                if reply in ready:
                    reply.send_multipart(self._answer(reply.recv_multipart()))
        finally:
            reply.close(linger=0)
            stop.close(linger=0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """One ZAP reply: 200 when the client's key is authorized in the socket's domain."""
        if len(request) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        name = domain.decode(errors="replace")
        with self._lock:
            known, keys = name in self._domains, self._domains.get(name)
        allowed = (mechanism == b"CURVE" and known and len(credentials) == 1
                   and (keys is None or credentials[0] in keys))
        if not allowed:
            log.warning("refused a %s client from %s (key not authorized)", mechanism.decode(errors="replace"),
                        address.decode(errors="replace"))
            return [version, request_id, b"400", b"key not authorized", b"", b""]
        return [version, request_id, b"200", b"OK", z85.encode(credentials[0]), b""]


def _bind_again(sock: zmq.Socket, endpoint: str, grace: float = 2.0) -> None:
    """Bind ``endpoint``, waiting (up to ``grace`` s) for a handler this process just stopped to let go of it."""
    deadline = time.monotonic() + grace
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.002)


_zap = _ZapHandler()


def refusal(event: int, value: int, endpoint: str, *, curve: bool, unexplained: int) -> AuthenticationError | None:
    """The AuthenticationError for a handshake failure the socket monitor reported, or None when
    the failure says nothing about security (yet). ``event``: ZeroMQ's ``EVENT_HANDSHAKE_FAILED_*``;
    ``value``: its status or error code; ``unexplained``: how many failures without detail this
    end saw so far, this one included.

    A refused key and a mechanism mismatch seen by this end are reported at once. A service
    that refuses the handshake first (it saw the mismatch before us, or cannot decrypt our
    hello: a wrong server key) just closes the connection: a failure without detail, which a
    connection lost mid-handshake gives too, so it counts only when it repeats.
    """
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return AuthenticationError(f"{endpoint} refused this client's CURVE key (ZAP status {value}); "
                                   f"add its .key file to the service's authorized keys")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MISMATCH:
        mine = "uses CURVE" if curve else "does not use CURVE"
        return AuthenticationError(f"{endpoint}: security mismatch: this client {mine} and the service "
                                   f"{'does not' if curve else 'does'}")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL or unexplained >= _UNEXPLAINED_FAILURES:
        hint = ("does the service use CURVE, and is its public key the one given?" if curve else
                "does the service use CURVE? Give this client its key (curve_server_key=)")
        return AuthenticationError(f"{endpoint}: the service closed the connection during the security "
                                   f"handshake (ZeroMQ code {value:#x}): {hint}")
    return None
