"""A real redis-server for the tests: daemonized (so it is nobody's child), on a free loopback
port, in a temporary directory, without persistence; never the system's service."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ENABLE_HINT = ("redis-server is not installed: install Debian's package (apt-get install redis-server) "
               "or run scripts/test.sh as root, which installs it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process; ``stop()`` and ``start()`` again keep its port (a restart)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="multifrost-redis-")
        self.pidfile = os.path.join(self.dir, "redis.pid")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
                        "--daemonize", "yes", "--pidfile", self.pidfile, "--save", "", "--appendonly", "no",
                        "--logfile", os.path.join(self.dir, "redis.log"), "--protected-mode", "yes"],
                       check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.dir}/redis.log")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pid(self) -> int | None:
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """Kill the server (SIGKILL: no goodbye to clients) and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            assert conn.recv(16).startswith(b"+OK")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def available() -> bool:
    return shutil.which("redis-server") is not None
