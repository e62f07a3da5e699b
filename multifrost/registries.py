"""Choosing a registry by name, and what connect mode asks of any registry.

A registry is named by a URL or a path: ``redis://host:port/db`` (also ``rediss://`` and
``unix://``) is a RedisRegistry, anything else the path of a JSON registry file. The same
name works in ``MULTIFROST_REGISTRY``, ``registry=`` and the CLI's ``--registry``.

The JSON file holds one entry per id on this machine; a lease registry holds every live
instance of an id, on any host. The helpers here give both the same shape: a list of live
instances, an announcement to close, an endpoint to dial.
"""
from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING, Protocol, TypeGuard, Union

from .errors import ServiceNotFoundError
from .registry import DEFAULT_POLL_INTERVAL, ENV_VAR, FileRegistry, Registry, ServiceEntry

if TYPE_CHECKING:
    from .registry_redis import RedisRegistry

RegistrySpec = Union[str, "os.PathLike[str]", Registry, None]
_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def open_registry(spec: RegistrySpec = None) -> Registry:
    """The registry ``spec`` names (a Registry passes through); None: ``$MULTIFROST_REGISTRY`` or the default file."""
    if isinstance(spec, Registry):
        return spec
    if spec is None:
        spec = os.environ.get(ENV_VAR) or None
        if spec is None:
            return FileRegistry()
    text = os.fspath(spec)
    if text.startswith(_URL_SCHEMES):
        from .registry_redis import RedisRegistry
        return RedisRegistry(text)
    if "://" in text:
        raise ValueError(f"registry {text!r}: unknown URL scheme (use redis://host:port/db or a file path)")
    return FileRegistry(text)


def close_opened(registry: Registry, spec: RegistrySpec) -> None:
    """Release the connections of a registry ``open_registry(spec)`` made (a Registry the caller gave stays open)."""
    if not isinstance(spec, Registry):
        close = getattr(registry, "close", None)
        if close is not None:
            close()


def is_shared(registry: Registry) -> TypeGuard[RedisRegistry]:
    """Whether the registry holds instances on other hosts (leases), not just this machine's pids."""
    return hasattr(registry, "instances")


def live_instances(registry: Registry, service_id: str) -> list[ServiceEntry]:
    """Every live instance of ``service_id`` (at most one in a JSON registry file)."""
    if is_shared(registry):
        return list(registry.instances(service_id))
    entry = registry.lookup(service_id)
    return [entry] if entry is not None and entry.alive else []


def instance_id(entry: ServiceEntry) -> tuple:
    """What tells two instances apart: the lease's instance id, or the file entry's (port, pid)."""
    return (getattr(entry, "instance", None), entry.port, entry.pid)


def dial_endpoint(entry: ServiceEntry) -> str:
    """The tcp endpoint a parent dials for ``entry``: its registered host (loopback for the file)."""
    host = getattr(entry, "host", "127.0.0.1")
    return f"tcp://[{host}]:{entry.port}" if ":" in host else f"tcp://{host}:{entry.port}"


def _pick(registry: Registry, service_id: str, avoid: tuple | None) -> ServiceEntry | None:
    found = live_instances(registry, service_id)
    others = [e for e in found if instance_id(e) != avoid]
    choice = others or found
    return random.choice(choice) if choice else None


def _missing(registry: Registry, service_id: str, timeout: float) -> ServiceNotFoundError:
    return ServiceNotFoundError(
        f"service {service_id!r} not found in registry {registry.location} within {timeout:g} s")


def find_instance(registry: Registry, service_id: str, timeout: float, avoid: tuple | None = None) -> ServiceEntry:
    """A live instance of ``service_id``, preferring one other than ``avoid``; waits up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        entry = _pick(registry, service_id, avoid)
        if entry is not None:
            return entry
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _missing(registry, service_id, timeout)
        time.sleep(min(DEFAULT_POLL_INTERVAL, remaining))


async def afind_instance(registry: Registry, service_id: str, timeout: float,
                         avoid: tuple | None = None) -> ServiceEntry:
    """``find_instance`` for asyncio code (the registry is read in a thread)."""
    import asyncio  # here: a service with plain methods only never loads it (child_loop)

    deadline = time.monotonic() + timeout
    while True:
        entry = await asyncio.to_thread(_pick, registry, service_id, avoid)
        if entry is not None:
            return entry
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _missing(registry, service_id, timeout)
        await asyncio.sleep(min(DEFAULT_POLL_INTERVAL, remaining))


class Announcement(Protocol):
    """A registration that lasts until ``close()``."""

    def close(self) -> None: ...


class _FileAnnouncement:
    """A JSON-file entry: registered now, unregistered on close (the pid tells liveness)."""

    def __init__(self, registry: Registry, service_id: str, port: int) -> None:
        self.registry, self.service_id = registry, service_id
        self.entry = registry.register(service_id, port)

    def close(self) -> None:
        self.registry.unregister(self.service_id)


def announce(registry: Registry, service_id: str, port: int, *, host: str,
             curve_public_key: str | None = None, lease_ttl: float | None = None) -> Announcement:
    """Register this process's instance of ``service_id``; the result's ``close()`` removes it.

    A lease registry gets ``host`` (where clients dial), the CURVE key and the lease's TTL;
    the JSON file gets only the port (its parents dial loopback).
    """
    if is_shared(registry):
        return registry.announce(service_id, port, host=host, curve_public_key=curve_public_key,
                                 lease_ttl=lease_ttl)
    return _FileAnnouncement(registry, service_id, port)
