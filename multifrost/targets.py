"""Where a ParentWorker's worker comes from: a spawned process, a registered service,
or a ChildWorker object served in this process. Each target opens a ParentEnd to it."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
import uuid
from typing import TYPE_CHECKING, Callable

from .errors import AuthenticationError, MultifrostError, ServiceNotFoundError, WorkerStartError
from .process import ChildProcess
from .spawn_env import ENDPOINT_ENV, PORT_ENV, WORKER_MODE_ENV
from .transports import ChildEnd, Curve, ParentEnd, curve_keys, open_child_end, open_parent_end

if TYPE_CHECKING:
    from .child import ChildWorker
    from .registries import RegistrySpec
    from .registry import Registry, ServiceEntry


class SpawnTarget:
    """Spawn mode: bind the parent end, start the child process with the endpoint in its env."""

    transports = ("auto", "tcp", "ipc", "unix")
    relocatable = False
    service_id: str | None = None

    def __init__(self, script: str, executable: str | None, args: tuple, env: dict | None,
                 cwd: str | None, transport: str) -> None:
        if transport not in self.transports:
            raise ValueError(f"spawn transport must be one of {', '.join(self.transports)}, not {transport!r}")
        self.script = os.fspath(script)
        self.executable = executable or sys.executable
        self.args = tuple(str(a) for a in args)
        self.env = dict(env) if env else {}
        self.cwd = cwd
        if transport == "auto":  # this Python speaks unix; any other program gets tcp, which every implementation speaks
            transport = "unix" if self.executable == sys.executable else "tcp"
        self.transport = transport
        self.name = os.path.basename(self.script)
        self._ipc_dir: str | None = None
        if transport == "unix" and not self.is_python:
            raise ValueError(f"spawn transport 'unix' is spoken by Python workers only; {self.script} "
                             f"run by {self.executable} needs 'tcp'")

    @property
    def is_python(self) -> bool:
        return self.executable == sys.executable or self.script.endswith(".py")

    def describe(self) -> str:
        return f"worker {self.name}"

    def open(self) -> tuple[ParentEnd, ChildProcess]:
        if self.is_python and not os.path.exists(os.path.join(self.cwd or "", self.script)):
            raise WorkerStartError(f"worker script not found: {self.script}")
        end = open_parent_end(self._bind_endpoint(), bind=True)
        env = {**os.environ, **self.env, WORKER_MODE_ENV: "1"}
        if self.transport == "tcp":
            env[PORT_ENV] = end.endpoint.rsplit(":", 1)[1]
            env.pop(ENDPOINT_ENV, None)
        else:
            env[ENDPOINT_ENV] = end.endpoint
            env.pop(PORT_ENV, None)
        argv = [self.executable, self.script, *(["--worker"] if self.is_python else []), *self.args]
        try:
            process = ChildProcess(argv, env, self.cwd, self.name)
        except BaseException:
            end.close()
            raise
        return end, process

    async def aopen(self) -> tuple[ParentEnd, ChildProcess]:
        return self.open()

    def _bind_endpoint(self) -> str:
        if self.transport == "tcp":
            return "tcp://127.0.0.1:0"
        if self._ipc_dir is None:
            self._ipc_dir = tempfile.mkdtemp(prefix="multifrost-")  # mode 0700
        return f"{self.transport}://{self._ipc_dir}/{uuid.uuid4().hex[:12]}.sock"

    def moved(self) -> bool:
        return False

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Nothing to watch: the parent learns of the worker's end from the process or its heartbeats."""

    def close(self) -> None:
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    async def aclose(self) -> None:
        self.close()


LEASE_WATCH_INTERVAL = 0.25  # seconds between looks at a lease registry for the instance in use


class ConnectTarget:
    """Connect mode: find a live instance of the service in the registry and dial its host:port.

    ``registry`` is a Registry or its name (see multifrost.registries); ``instance`` pins one
    instance (a pool member). With CURVE (``curve_secret_key`` = this client's ``.key_secret``
    file, or the service registering a public key) the server's key is ``curve_server_key``
    when pinned, else the one in the registry entry; a client without a key file of its own
    uses a fresh keypair (enough for a service that admits any client knowing its key).
    """

    def __init__(self, service_id: str, timeout: float, registry: "RegistrySpec" = None, *,
                 instance: str | None = None, curve_secret_key: "str | os.PathLike[str] | None" = None,
                 curve_server_key: "str | bytes | os.PathLike[str] | None" = None) -> None:
        self.service_id = service_id
        self.timeout = timeout
        self._spec = registry
        self._registry: "Registry | None" = None
        self.instance = instance
        self.curve_secret_key = curve_secret_key
        self.curve_server_key = curve_server_key
        self.name = service_id
        self.entry: ServiceEntry | None = None  # the registry entry the last open() connected to
        self._lost: tuple | None = None  # the instance last found gone: the next open() prefers another
        self._watcher: threading.Thread | None = None
        self._watch_stop = threading.Event()

    @property
    def registry(self) -> "Registry":
        if self._registry is None:
            from .registries import open_registry
            self._registry = open_registry(self._spec)
        return self._registry

    def describe(self) -> str:
        where = f" instance {self.instance}" if self.instance else ""
        return f"service {self.service_id!r}{where}"

    def _find(self) -> "ServiceEntry":
        from .registries import find_instance
        if self.instance is None:
            return find_instance(self.registry, self.service_id, self.timeout, avoid=self._lost)
        return self._pinned()

    def _pinned(self) -> "ServiceEntry":
        from .registries import live_instances
        for entry in live_instances(self.registry, self.service_id):
            if getattr(entry, "instance", None) == self.instance:
                return entry
        raise ServiceNotFoundError(f"{self.describe()} is not in registry {self.registry.location}")

    def _dial(self, entry: "ServiceEntry") -> ParentEnd:
        from .registries import dial_endpoint
        curve = self._client_curve(entry)
        self.entry = entry
        return open_parent_end(dial_endpoint(entry), bind=False, **({"curve": curve} if curve else {}))

    def _client_curve(self, entry: "ServiceEntry") -> Curve | None:
        keys = curve_keys() if (self.curve_secret_key or self.curve_server_key
                                or getattr(entry, "curve_public_key", None)) else None
        if keys is None:
            return None
        server_key = (keys.load_public_key(self.curve_server_key) if self.curve_server_key is not None
                      else getattr(entry, "curve_public_key", None))
        if server_key is None:
            raise AuthenticationError(f"{self.describe()} registered no CURVE public key: "
                                      f"pin it with curve_server_key= or run the service with CURVE")
        if isinstance(server_key, str):
            server_key = server_key.encode()
        public, secret = (keys.load_keypair(self.curve_secret_key) if self.curve_secret_key is not None
                          else keys.new_keypair())
        return Curve(public, secret, server_key=server_key)

    def open(self) -> tuple[ParentEnd, None]:
        return self._dial(self._find()), None

    async def aopen(self) -> tuple[ParentEnd, None]:
        from .registries import afind_instance
        if self.instance is None:
            entry = await afind_instance(self.registry, self.service_id, self.timeout, avoid=self._lost)
        else:
            entry = await asyncio.to_thread(self._pinned)
        return self._dial(entry), None

    def watch(self, on_lost: Callable[[], None]) -> None:
        """With a lease registry, call ``on_lost`` (from a thread of its own) each time the instance
        in use has left the registry, so the parent moves on within a moment of its lease expiring
        instead of at its next missed heartbeat. Not for a pinned instance (a pool follows those)."""
        from .registries import is_shared
        if self.instance is not None or self._watcher is not None or not is_shared(self.registry):
            return
        self._watch_stop.clear()
        self._watcher = threading.Thread(target=self._watch, args=(on_lost,), daemon=True,
                                         name=f"multifrost-lease-watch-{self.service_id}")
        self._watcher.start()

    def _watch(self, on_lost: Callable[[], None]) -> None:
        reported = None
        while not self._watch_stop.wait(LEASE_WATCH_INTERVAL):
            entry = self.entry
            if entry is None or entry is reported:
                continue
            try:
                lost = self.moved()
            except MultifrostError:
                continue  # the registry does not answer: the connection may well be fine
            if lost and entry is self.entry:
                reported = entry  # once per instance: the parent reconnects, or its heartbeats take over
                on_lost()

    def moved(self) -> bool:
        """Whether the instance we connected to is gone (its lease expired, its pid died) or moved."""
        from .registries import instance_id, live_instances
        was = self.entry
        if was is None:
            return True
        if any(instance_id(e) == instance_id(was) for e in live_instances(self.registry, self.service_id)):
            return False
        self._lost = instance_id(was)
        return True

    relocatable = True

    def close(self) -> None:
        if self._watcher is not None:
            self._watch_stop.set()
            self._watcher.join()
            self._watcher = None
        if self._registry is not None:
            from .registries import close_opened
            close_opened(self._registry, self._spec)
            self._registry = None

    async def aclose(self) -> None:
        self.close()


class InprocessTarget:
    """A ChildWorker object served in this process, over ``memory://`` or ``inproc://``.

    The worker gets an event loop in a thread of its own (with either API), so that a
    plain method it runs inline never stalls the caller's loop.
    """

    transports = ("memory", "inproc")
    relocatable = False
    service_id: str | None = None

    def __init__(self, worker: "ChildWorker", transport: str) -> None:
        if transport not in self.transports:
            raise ValueError(f"in-process transport must be one of {', '.join(self.transports)}, not {transport!r}")
        self.worker = worker
        self.transport = transport
        self.name = type(worker).__name__
        self._thread: threading.Thread | None = None
        self._child_end: ChildEnd | None = None

    def describe(self) -> str:
        return f"in-process worker {self.name}"

    def _bind(self) -> tuple[str, ChildEnd]:
        endpoint = f"{self.transport}://multifrost-{uuid.uuid4().hex}"
        self._child_end = child_end = open_child_end(endpoint, bind=True)
        return endpoint, child_end

    def open(self) -> tuple[ParentEnd, None]:
        endpoint, child_end = self._bind()
        ready = threading.Event()

        def serve() -> None:
            async def main() -> None:
                task = asyncio.ensure_future(self.worker.serve(child_end))
                await asyncio.sleep(0)
                ready.set()
                await task
            asyncio.run(main())

        self._thread = threading.Thread(target=serve, name=f"multifrost-inprocess-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        return open_parent_end(endpoint, bind=False), None

    async def aopen(self) -> tuple[ParentEnd, None]:
        return self.open()

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Nothing to watch: the parent learns of the worker's end from the process or its heartbeats."""

    def close(self) -> None:
        """Stop the served worker and wait for it (sync API)."""
        self.worker.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close_end()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def moved(self) -> bool:
        return False

    def _close_end(self) -> None:
        if self._child_end is not None:
            self._child_end.close()
            self._child_end = None
