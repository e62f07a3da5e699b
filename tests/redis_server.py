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

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", netns: str | None = None) -> None:
        self.host = host
        self.netns = netns  # run it inside this network namespace (``ip netns exec``)
        self.port = port or (6379 if netns else free_port())
        self.dir = tempfile.mkdtemp(prefix="multifrost-redis-")
        self.pidfile = os.path.join(self.dir, "redis.pid")
        self.url = f"redis://{host}:{self.port}/0"

    def _argv(self, *argv: str) -> list[str]:
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + list(argv)

    def start(self, timeout: float = 10.0) -> "RedisServer":
        subprocess.run(self._argv("redis-server", "--bind", self.host, "--port", str(self.port), "--dir", self.dir,
                        "--daemonize", "yes", "--pidfile", self.pidfile, "--save", "", "--appendonly", "no",
                        "--logfile", os.path.join(self.dir, "redis.log"), "--protected-mode", "no"),
                       check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.dir}/redis.log")
            time.sleep(0.02)
        return self

    def command(self, *words: str) -> bytes | None:
        """One command's reply, as redis-cli prints a simple reply (None when the server does not answer)."""
        if self.netns:
            done = subprocess.run(self._argv("redis-cli", "-h", self.host, "-p", str(self.port), *words),
                                  capture_output=True, timeout=10)
            out = done.stdout.strip()
            return out if done.returncode == 0 and not out.startswith(b"Could not connect") else None
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as conn:
                conn.sendall(b" ".join(w.encode() for w in words) + b"\r\n")
                return conn.recv(1 << 16).strip().lstrip(b"+")
        except OSError:
            return None

    def answers(self) -> bool:
        return self.command("PING") == b"PONG"

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
        reply = self.command("FLUSHALL")
        assert reply == b"OK", reply

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def available() -> bool:
    return shutil.which("redis-server") is not None
