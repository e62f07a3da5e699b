"""The service registry on Redis: every live instance of a service holds a lease, a key that expires.

Key ``multifrost:service:<service id>:<instance>`` holds a JSON object describing one instance
(fields in docs/protocol.md) and expires ``lease_ttl`` seconds after it was last written. A
service keeps its lease by writing it again every ``lease_ttl / 3`` s from a thread of its own,
so a busy event loop does not lose it while a killed process or a vanished host does. Each
renewal writes the whole value, which also restores a lease Redis lost (a restart without
persistence): the service is registered again as soon as Redis answers. A clean stop deletes
the key. Requires redis-py (``pip install 'multifrost[redis]'``).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from .errors import RegistryError
from .registry import Registry, ServiceEntry, _is_int, _now_iso

log = logging.getLogger(__name__)

KEY_PREFIX = "multifrost:service:"
DEFAULT_LEASE_TTL = 5.0
DEFAULT_REDIS_TIMEOUT = 1.0
_GLOB_SPECIALS = "\\*?[]"


@dataclass(frozen=True)
class InstanceEntry(ServiceEntry):
    """One live instance of a service in a lease registry: where to dial it and how to trust it."""

    instance: str = ""
    host: str = "127.0.0.1"
    hostname: str = ""
    curve_public_key: str | None = None

    @property
    def alive(self) -> bool:
        """Always True: the entry exists only while its lease runs."""
        return True

    def to_lease(self) -> dict[str, Any]:
        """The entry's value in Redis (a JSON object)."""
        return {"id": self.service_id, "instance": self.instance, "host": self.host, "port": self.port,
                "pid": self.pid, "hostname": self.hostname, "started": self.started,
                "curve_public_key": self.curve_public_key}

    @classmethod
    def from_lease(cls, raw: str | bytes) -> InstanceEntry | None:
        """Parse a lease value; None when it is not a well-formed entry."""
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        sid, instance, host, port = value.get("id"), value.get("instance"), value.get("host"), value.get("port")
        pid, key = value.get("pid", 0), value.get("curve_public_key")
        if not (isinstance(sid, str) and isinstance(instance, str) and isinstance(host, str) and host
                and _is_int(port) and 0 < port < 65536 and _is_int(pid)):
            return None
        return cls(sid, port, pid, str(value.get("started", "")), instance, host,
                   str(value.get("hostname", "")), key if isinstance(key, str) and key else None)


def _masked(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisRegistry(Registry):
    """Service instances as leases in Redis at ``url`` (``redis://host:port/db``).

    ``timeout`` bounds every Redis command (connecting included); a Redis that does not
    answer within it gives a RegistryError naming the URL.
    """

    def __init__(self, url: str, *, lease_ttl: float = DEFAULT_LEASE_TTL,
                 timeout: float = DEFAULT_REDIS_TIMEOUT) -> None:
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds, not {lease_ttl!r}")
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise RegistryError(f"registry {_masked(url)} needs redis-py: pip install 'multifrost[redis]'") from None
        self.url = url
        self.lease_ttl = float(lease_ttl)
        self._error_types = (redis.RedisError, OSError)
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                               retry=Retry(NoBackoff(), 0), decode_responses=True)
        except ValueError as exc:
            raise RegistryError(f"bad Redis registry URL {_masked(url)}: {exc}") from None

    def __repr__(self) -> str:
        return f"RedisRegistry({self.location!r})"

    @property
    def location(self) -> str:
        return _masked(self.url)

    def close(self) -> None:
        """Release the connections to Redis."""
        self._redis.close()

    @contextmanager
    def _talking(self, what: str) -> Iterator[Any]:
        """Run Redis commands; a failure becomes a RegistryError naming the URL."""
        try:
            yield self._redis
        except self._error_types as exc:
            raise RegistryError(f"Redis registry {self.location}: cannot {what}: {exc}") from None

    # -- leases ----------------------------------------------------------------------------

    @staticmethod
    def key(service_id: str, instance: str) -> str:
        """The Redis key of one instance's lease."""
        return f"{KEY_PREFIX}{service_id}:{instance}"

    def write(self, entry: InstanceEntry, ttl: float | None = None) -> None:
        """Write (or renew) ``entry``'s lease for ``ttl`` seconds (default ``lease_ttl``)."""
        ttl_ms = max(1, int((ttl or self.lease_ttl) * 1000))
        with self._talking(f"write the lease of {entry.service_id!r}") as r:
            r.set(self.key(entry.service_id, entry.instance), json.dumps(entry.to_lease()), px=ttl_ms)

    def delete(self, entry: InstanceEntry) -> None:
        """Remove ``entry``'s lease."""
        with self._talking(f"delete the lease of {entry.service_id!r}") as r:
            r.delete(self.key(entry.service_id, entry.instance))

    def new_entry(self, service_id: str, port: int, *, host: str = "127.0.0.1", pid: int | None = None,
                  curve_public_key: str | None = None) -> InstanceEntry:
        """A fresh instance entry for this process (not yet written)."""
        if not isinstance(service_id, str) or not service_id:
            raise ValueError(f"service_id must be a non-empty string, not {service_id!r}")
        if not _is_int(port) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer in 1..65535, not {port!r}")
        return InstanceEntry(service_id, port, os.getpid() if pid is None else pid, _now_iso(),
                             uuid.uuid4().hex[:16], host, socket.gethostname(), curve_public_key)

    def announce(self, service_id: str, port: int, *, host: str = "127.0.0.1",
                 curve_public_key: str | None = None, lease_ttl: float | None = None) -> "Lease":
        """Register an instance and keep its lease (``lease_ttl`` s, default the registry's)
        until the returned Lease is closed."""
        entry = self.new_entry(service_id, port, host=host, curve_public_key=curve_public_key)
        return Lease(self, entry, lease_ttl or self.lease_ttl)

    def instances(self, service_id: str) -> list[InstanceEntry]:
        """Every live instance of ``service_id``, oldest first."""
        escaped = "".join("\\" + c if c in _GLOB_SPECIALS else c for c in service_id)
        return [e for e in self._scan(f"{KEY_PREFIX}{escaped}:*") if e.service_id == service_id]

    def all_instances(self) -> list[InstanceEntry]:
        """Every live instance of every service, by id then age."""
        return sorted(self._scan(f"{KEY_PREFIX}*"), key=lambda e: (e.service_id, e.started, e.instance))

    def _scan(self, pattern: str) -> list[InstanceEntry]:
        with self._talking("list services") as r:
            keys = list(r.scan_iter(match=pattern, count=500))
            values = r.mget(keys) if keys else []
        found = []
        for key, raw in zip(keys, values):
            if raw is None:
                continue  # expired between SCAN and MGET
            entry = InstanceEntry.from_lease(raw)
            if entry is None or key != self.key(entry.service_id, entry.instance):
                log.warning("ignoring malformed lease %r in %s", key, self.location)
                continue
            found.append(entry)
        return sorted(found, key=lambda e: (e.started, e.instance))

    # -- the Registry primitives ---------------------------------------------------------

    def register(self, service_id: str, port: int, pid: int | None = None) -> ServiceEntry:
        """Write a lease of ``lease_ttl`` seconds that nothing renews (``announce`` keeps one)."""
        entry = self.new_entry(service_id, port, pid=pid)
        self.write(entry)
        return entry

    def unregister(self, service_id: str, pid: int | None = None) -> bool:
        """Delete the leases of ``service_id`` held by ``pid`` (default: this process) on this host."""
        pid = os.getpid() if pid is None else pid
        mine = [e for e in self.instances(service_id) if e.pid == pid and e.hostname == socket.gethostname()]
        for entry in mine:
            self.delete(entry)
        return bool(mine)

    def lookup(self, service_id: str) -> ServiceEntry | None:
        found = self.instances(service_id)
        return found[0] if found else None

    def entries(self) -> dict[str, ServiceEntry]:
        """The oldest live instance of each service (``all_instances`` lists them all)."""
        found: dict[str, ServiceEntry] = {}
        for entry in self.all_instances():
            found.setdefault(entry.service_id, entry)
        return found

    def prune(self) -> list[str]:
        """Nothing to do: a dead instance's lease expires by itself."""
        return []


class Lease:
    """An instance's registry entry, renewed every ``ttl / 3`` s by a thread until ``close()``.

    The first write happens here (RegistryError when Redis does not answer); later failures
    are logged and retried at the next renewal, which writes the entry back once Redis answers.
    """

    def __init__(self, registry: RedisRegistry, entry: InstanceEntry, ttl: float) -> None:
        if not ttl > 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds, not {ttl!r}")
        self.registry = registry
        self.entry = entry
        self.ttl = ttl
        self._stop = threading.Event()
        registry.write(entry, ttl)
        self._thread = threading.Thread(target=self._renew, name=f"multifrost-lease-{entry.service_id}",
                                        daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        failing = False
        while not self._stop.wait(self.ttl / 3):
            try:
                self.registry.write(self.entry, self.ttl)
            except RegistryError as exc:
                if not failing:
                    log.warning("cannot renew the lease of %r (instance %s): %s",
                                   self.entry.service_id, self.entry.instance, exc)
                failing = True
                continue
            if failing:
                log.info("lease of %r (instance %s) renewed again", self.entry.service_id, self.entry.instance)
            failing = False

    def close(self) -> None:
        """Stop renewing and delete the entry (a failure to delete is logged: the lease expires anyway)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self.registry.delete(self.entry)
        except RegistryError as exc:
            log.warning("%s; the entry expires within %g s", exc, self.ttl)
