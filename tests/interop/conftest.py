"""Fixtures for the interop tests: a Node.js Multifrost v4 peer (peer.js in this folder).

The session fixture ``node_peer`` finds node and npm, runs ``npm ci`` here once when
node_modules is missing or older than package-lock.json, and offers helpers to start the peer
in its three roles. Without Node.js/npm the tests are skipped, except in CI (CI=true), where
they fail.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

INTEROP_DIR = Path(__file__).resolve().parent
PEER_JS = INTEROP_DIR / "peer.js"
RAW_CHILD = INTEROP_DIR / "raw_child.py"
LOCK_STAMP = INTEROP_DIR / "node_modules" / ".multifrost-lock-sha256"
INSTALL_HINT = (
    "Node.js 20 and npm are needed for the interop tests: install them (e.g. `apt-get install nodejs npm`, "
    "or from https://nodejs.org/ / nvm: `nvm install 20`), then rerun; `npm ci` in tests/interop runs by itself."
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure). {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{reason}. {INSTALL_HINT}")


def _ensure_node_modules(npm: str) -> None:
    """Run `npm ci` unless node_modules matches package-lock.json (stamp holds the lock's hash)."""
    wanted = hashlib.sha256((INTEROP_DIR / "package-lock.json").read_bytes()).hexdigest()
    guard_path = Path(tempfile.gettempdir()) / f"multifrost-npm-ci-{hashlib.sha256(bytes(INTEROP_DIR)).hexdigest()[:12]}.lock"
    with open(guard_path, "w") as guard:  # serialises concurrent sessions (xdist)
        fcntl.flock(guard, fcntl.LOCK_EX)
        if LOCK_STAMP.is_file() and LOCK_STAMP.read_text().strip() == wanted:
            return
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=INTEROP_DIR,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"`npm ci` in {INTEROP_DIR} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
                        pytrace=False)
        LOCK_STAMP.write_text(wanted)


@dataclass
class NodePeer:
    """How to run peer.js; see README.md in this folder for its modes and scenario format."""

    node: str

    def child_command(self, *extra: str) -> list[str]:
        """argv of a spawn-mode child (it still needs COMLINK_ZMQ_PORT in its environment)."""
        return [self.node, str(PEER_JS), "child", *extra]

    def start_child(self, port: int, *extra: str, env: dict | None = None, stderr=None) -> subprocess.Popen:
        """Start a spawn-mode child whose ROUTER connects to 127.0.0.1:port."""
        full_env = {**os.environ, **(env or {}), "COMLINK_ZMQ_PORT": str(port), "COMLINK_WORKER_MODE": "1"}
        return subprocess.Popen(self.child_command(*extra), env=full_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr)

    def start_service(self, service_id: str, registry: Path, *, port: int = 0, env: dict | None = None,
                      stderr=None) -> subprocess.Popen:
        """Start a connect-mode child registered as service_id in the given registry file.

        It prints one JSON line {"ready": true, "port": ..., "pid": ...} on stdout once registered.
        """
        full_env = {**os.environ, **(env or {}), "MULTIFROST_REGISTRY": str(registry)}
        return subprocess.Popen([self.node, str(PEER_JS), "serve", "--service-id", service_id, "--port", str(port)],
                                env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                text=True)

    def run_parent(self, scenario: dict, *, env: dict | None = None, timeout: float = 60) -> "ParentRun":
        """Run the parent role on a scenario; returns its exit code and the JSON lines it printed."""
        proc = subprocess.run([self.node, str(PEER_JS), "parent", "--scenario-file", "-"],
                              input=json.dumps(scenario), env={**os.environ, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return ParentRun(proc.returncode, events, proc.stderr)


@dataclass
class ParentRun:
    returncode: int
    events: list[dict]
    stderr: str

    def of(self, event: str, **match) -> list[dict]:
        """Events of one kind whose fields equal ``match``."""
        return [e for e in self.events if e["event"] == event and all(e.get(k) == v for k, v in match.items())]

    def result(self, step: int, index: int = 0) -> dict:
        (found,) = self.of("result", step=step, index=index)
        return found


@pytest.fixture(scope="session")
def node_peer() -> NodePeer:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable(f"{'node' if node is None else 'npm'} was not found on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        _unavailable(f"Node.js {version} is too old")
    _ensure_node_modules(npm)
    return NodePeer(node)
