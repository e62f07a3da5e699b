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
from typing import TYPE_CHECKING

from .errors import WorkerStartError
from .process import ChildProcess
from .spawn_env import ENDPOINT_ENV, PORT_ENV, WORKER_MODE_ENV
from .transports import ChildEnd, ParentEnd, open_child_end, open_parent_end

if TYPE_CHECKING:
    from .child import ChildWorker
    from .registry import Registry, ServiceEntry


class SpawnTarget:
    """Spawn mode: bind the parent end, start the child process with the endpoint in its env."""

    transports = ("tcp", "ipc", "unix")
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

    def close(self) -> None:
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    async def aclose(self) -> None:
        self.close()


class ConnectTarget:
    """Connect mode: find the service's port in the registry and connect to it."""

    def __init__(self, service_id: str, timeout: float, registry: "Registry | None") -> None:
        self.service_id = service_id
        self.timeout = timeout
        self._registry = registry
        self.name = service_id
        self.entry: ServiceEntry | None = None  # the registry entry the last open() connected to

    @property
    def registry(self) -> "Registry":
        if self._registry is None:
            from .registry import default_registry
            self._registry = default_registry()
        return self._registry

    def describe(self) -> str:
        return f"service {self.service_id!r}"

    def open(self) -> tuple[ParentEnd, None]:
        self.entry = entry = self.registry.discover(self.service_id, timeout=self.timeout)
        return open_parent_end(f"tcp://127.0.0.1:{entry.port}", bind=False), None

    async def aopen(self) -> tuple[ParentEnd, None]:
        self.entry = entry = await self.registry.adiscover(self.service_id, timeout=self.timeout)
        return open_parent_end(f"tcp://127.0.0.1:{entry.port}", bind=False), None

    def moved(self) -> bool:
        """Whether the service we connected to is gone, dead, or re-registered elsewhere."""
        now = self.registry.lookup(self.service_id)
        was = self.entry
        return now is None or not now.alive or was is None or (now.port, now.pid) != (was.port, was.pid)

    relocatable = True

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


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
