"""The service registry of connect mode: which service id listens on which port.

Every Multifrost v4 implementation (Python, JavaScript, Go, Rust) shares one JSON file,
``~/.multifrost/services.json``, mapping ``service_id -> {"port", "pid", "started"}``, so a
service registered here is found by a parent written in any of them, and the other way round.

Writers hold two locks while they read, change and write the file: the file
``services.lock`` created with ``O_CREAT|O_EXCL`` and holding the writer's pid (what the
Python, Go and Rust peers use) and the directory ``services.json.lock`` created with ``mkdir``
(what the JavaScript peer uses); see registry_lock. A lock whose owner is not running is
removed at once, any lock older than 10 s too. The file itself is always replaced atomically
(temporary file + ``os.replace``), so readers (``lookup``, ``entries``, ``discover``) read it
without locking: they never see a half-written file, and they never make a JavaScript writer,
which does not retry a held lock, fail.

``MULTIFROST_REGISTRY`` names another registry file (its locks live beside it); it is read
when a registry object is created.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeGuard

from .errors import RegistryError, ServiceNotFoundError
from .registry_lock import HeldLocks, pid_alive

log = logging.getLogger(__name__)

ENV_VAR = "MULTIFROST_REGISTRY"
DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_STALE_AFTER = 10.0
DEFAULT_DISCOVER_TIMEOUT = 5.0
DEFAULT_POLL_INTERVAL = 0.1


def default_path() -> Path:
    """The registry file: ``$MULTIFROST_REGISTRY`` if set, else ``~/.multifrost/services.json``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".multifrost" / "services.json"


def _now_iso() -> str:
    """The current UTC time the way JavaScript's ``Date.toISOString()`` writes it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ServiceEntry:
    """One registered service: where it listens and which process serves it."""

    service_id: str
    port: int
    pid: int
    started: str

    @property
    def alive(self) -> bool:
        """True while the registering process still runs."""
        return pid_alive(self.pid)

    def to_json(self) -> dict[str, Any]:
        """The entry's value in the registry file."""
        return {"port": self.port, "pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, service_id: str, value: Any) -> ServiceEntry | None:
        """Parse a registry value; None when it is not a well-formed entry."""
        if not isinstance(value, dict):
            return None
        port, pid, started = value.get("port"), value.get("pid"), value.get("started", "")
        if not (isinstance(port, int) and isinstance(pid, int)) or isinstance(port, bool) or isinstance(pid, bool):
            return None
        return cls(service_id, port, pid, started if isinstance(started, str) else str(started))


class Registry(ABC):
    """Where connect-mode services announce themselves and parents find them.

    ``FileRegistry`` is the one every Multifrost v4 peer understands; other backends
    implement the five primitives and inherit discovery.
    """

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the registry lives, for messages (a path, a URL, ...)."""

    @abstractmethod
    def register(self, service_id: str, port: int, pid: int | None = None) -> ServiceEntry:
        """Announce ``service_id`` on ``port`` for ``pid`` (default: this process).

        Raises RegistryError when a live process other than ``pid`` holds the id; an entry
        whose process is dead is taken over.
        """

    @abstractmethod
    def unregister(self, service_id: str, pid: int | None = None) -> bool:
        """Remove the entry if ``pid`` (default: this process) owns it; True if removed."""

    @abstractmethod
    def lookup(self, service_id: str) -> ServiceEntry | None:
        """The entry for ``service_id``, alive or not; None when there is none."""

    @abstractmethod
    def entries(self) -> dict[str, ServiceEntry]:
        """Every well-formed entry, alive or not."""

    @abstractmethod
    def prune(self) -> list[str]:
        """Remove the entries whose process is dead; return their ids."""

    def discover(
        self,
        service_id: str,
        timeout: float = DEFAULT_DISCOVER_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> ServiceEntry:
        """Wait until ``service_id`` has a live entry and return it.

        Raises ServiceNotFoundError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            entry, wait = self._look(service_id, deadline, timeout, poll_interval)
            if entry is not None:
                return entry
            time.sleep(wait)

    async def adiscover(
        self,
        service_id: str,
        timeout: float = DEFAULT_DISCOVER_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> ServiceEntry:
        """``discover`` for asyncio code: polls with ``asyncio.sleep``."""
        import asyncio  # here: a service with plain methods only never loads it (child_loop)

        deadline = time.monotonic() + timeout
        while True:
            entry, wait = self._look(service_id, deadline, timeout, poll_interval)
            if entry is not None:
                return entry
            await asyncio.sleep(wait)

    def _look(self, service_id: str, deadline: float, timeout: float,
              poll_interval: float) -> tuple[ServiceEntry | None, float]:
        """One look for discovery: the live entry, or how long to wait before the next look."""
        entry = self.lookup(service_id)
        if entry is not None and entry.alive:
            return entry, 0.0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._not_found(service_id, timeout, entry)
        return None, min(poll_interval, remaining)

    def _not_found(self, service_id: str, timeout: float, entry: ServiceEntry | None) -> ServiceNotFoundError:
        detail = f" (its entry names pid {entry.pid}, which is not running)" if entry is not None else ""
        return ServiceNotFoundError(
            f"service {service_id!r} not found in registry {self.location} within {timeout:g} s{detail}"
        )


class FileRegistry(Registry):
    """The shared JSON registry file, locked the way every Multifrost v4 peer locks it."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        stale_after: float = DEFAULT_STALE_AFTER,
    ):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.lock_path = self.path.with_name("services.lock")
        self.dir_lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self.stale_after = stale_after

    def __repr__(self) -> str:
        return f"FileRegistry({str(self.path)!r})"

    @property
    def location(self) -> str:
        return str(self.path)

    # -- the Registry primitives ----------------------------------------------------------

    def register(self, service_id: str, port: int, pid: int | None = None) -> ServiceEntry:
        pid = os.getpid() if pid is None else pid
        if not isinstance(service_id, str) or not service_id:
            raise ValueError(f"service_id must be a non-empty string, not {service_id!r}")
        if not _is_int(port) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer in 1..65535, not {port!r}")
        with self._locked():
            data = self._read()
            current = ServiceEntry.from_json(service_id, data.get(service_id))
            if current is not None and current.pid != pid and current.alive:
                raise RegistryError(
                    f"service {service_id!r} is already registered by running pid {current.pid} "
                    f"on port {current.port} (registry {self.path}); stop that process or choose another "
                    f"service id"
                )
            entry = ServiceEntry(service_id, port, pid, _now_iso())
            data[service_id] = entry.to_json()
            self._write(data)
        log.debug("registered %r on port %d for pid %d in %s", service_id, port, pid, self.path)
        return entry

    def unregister(self, service_id: str, pid: int | None = None) -> bool:
        pid = os.getpid() if pid is None else pid
        with self._locked():
            data = self._read()
            current = ServiceEntry.from_json(service_id, data.get(service_id))
            if current is None or current.pid != pid:
                return False
            del data[service_id]
            self._write(data)
        log.debug("unregistered %r (pid %d) from %s", service_id, pid, self.path)
        return True

    def lookup(self, service_id: str) -> ServiceEntry | None:
        return ServiceEntry.from_json(service_id, self._read().get(service_id))

    def entries(self) -> dict[str, ServiceEntry]:
        found = {}
        for service_id, value in self._read().items():
            entry = ServiceEntry.from_json(service_id, value)
            if entry is None:
                log.warning("ignoring malformed entry %r in %s: %r", service_id, self.path, value)
            else:
                found[service_id] = entry
        return found

    def prune(self) -> list[str]:
        with self._locked():
            data = self._read()
            dead = []
            for service_id, value in data.items():
                entry = ServiceEntry.from_json(service_id, value)
                if entry is not None and not entry.alive:
                    dead.append(service_id)
            for service_id in dead:
                del data[service_id]
            if dead:
                self._write(data)
        if dead:
            log.info("pruned dead services %s from %s", dead, self.path)
        return dead

    # -- the file -----------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        """The file's map; empty when the file is missing or empty."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryError(f"cannot read service registry {self.path}: {exc.strerror or exc}") from exc
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(
                f"service registry {self.path} is not valid JSON ({exc}); repair or delete it"
            ) from exc
        if not isinstance(data, dict):
            raise RegistryError(f"service registry {self.path} does not hold a JSON object; repair or delete it")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        """Replace the file atomically with ``data`` (mode 0600), formatted as the JS peer does."""
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
        except OSError as exc:
            raise RegistryError(f"cannot write service registry {self.path}: {exc.strerror or exc}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _ensure_dir(self) -> None:
        """Create the registry's directory, private to this user (0700), if it is missing."""
        directory = self.path.parent
        if directory.is_dir():
            return
        try:
            os.makedirs(directory, mode=0o700)
            os.chmod(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RegistryError(f"cannot create registry directory {directory}: {exc.strerror or exc}") from exc

    # -- the two locks (registry_lock) ----------------------------------------------------

    def _locked(self) -> HeldLocks:
        """Hold both the O_EXCL file lock and the JavaScript peer's directory lock."""
        self._ensure_dir()
        return HeldLocks(self.lock_path, self.dir_lock_path, self.path, self.lock_timeout, self.stale_after)


def default_registry() -> Registry:
    """The registry ``$MULTIFROST_REGISTRY`` names (a file path or a ``redis://`` URL), else the shared file."""
    from .registries import open_registry
    return open_registry()
