"""The file registry: format, permissions, ownership rules, both lock kinds, discovery."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from multifrost.errors import RegistryError, ServiceNotFoundError
from multifrost.registry import FileRegistry, ServiceEntry, default_registry


@pytest.fixture
def live_pid():
    """The pid of a process that stays alive for the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_raw(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def leftovers(path: Path) -> list[str]:
    """Anything but the registry file itself in its directory (locks, temp files)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_register_writes_the_shared_format(registry_path):
    entry = default_registry().register("math", 5555)
    assert entry.pid == os.getpid() and entry.port == 5555 and entry.service_id == "math"
    data = json.loads(registry_path.read_text())
    assert data == {"math": {"port": 5555, "pid": os.getpid(), "started": entry.started}}
    # Formatted as the JavaScript peer writes it (JSON.stringify(data, null, 2)).
    assert registry_path.read_text() == json.dumps(data, indent=2)
    assert entry.started.endswith("Z")
    datetime.fromisoformat(entry.started.replace("Z", "+00:00"))
    assert leftovers(registry_path) == []


def test_permissions_dir_0700_file_0600(registry_path):
    default_registry().register("svc", 4000)
    assert stat.S_IMODE(registry_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(registry_path.stat().st_mode) == 0o600


def test_rewrite_makes_an_open_file_private(registry_path):
    write_raw(registry_path, "{}")
    registry_path.chmod(0o644)
    default_registry().register("svc", 4000)
    assert stat.S_IMODE(registry_path.stat().st_mode) == 0o600


def test_env_var_is_read_when_the_registry_is_created(tmp_path, monkeypatch, registry_path):
    first = default_registry()
    other = tmp_path / "other" / "services.json"
    monkeypatch.setenv("MULTIFROST_REGISTRY", str(other))
    first.register("a", 4001)
    default_registry().register("b", 4002)
    assert set(json.loads(registry_path.read_text())) == {"a"}
    assert set(json.loads(other.read_text())) == {"b"}
    assert FileRegistry(other).lock_path == other.parent / "services.lock"
    assert FileRegistry(other).dir_lock_path == other.parent / "services.json.lock"


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_missing_or_empty_file_is_an_empty_registry(registry_path, content):
    if content is not None:
        write_raw(registry_path, content)
    reg = default_registry()
    assert reg.entries() == {}
    assert reg.lookup("x") is None
    reg.register("x", 4003)
    assert set(reg.entries()) == {"x"}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", b"\xff\xfe{}"])
def test_corrupt_file_is_an_error_naming_the_path_and_is_left_alone(registry_path, content):
    write_raw(registry_path, content)
    before = registry_path.read_bytes()
    reg = default_registry()
    for action in (reg.entries, lambda: reg.lookup("a"), lambda: reg.register("a", 4004), reg.prune):
        with pytest.raises(RegistryError, match=str(registry_path)):
            action()
    assert registry_path.read_bytes() == before
    assert leftovers(registry_path) == []


def test_malformed_entries_are_skipped_but_kept(registry_path):
    write_raw(registry_path, json.dumps({"weird": "x", "noport": {"pid": 1}}))
    reg = default_registry()
    assert reg.entries() == {}
    reg.register("ok", 4005)
    data = json.loads(registry_path.read_text())
    assert data["weird"] == "x" and data["noport"] == {"pid": 1} and data["ok"]["port"] == 4005


def test_other_fields_of_foreign_entries_survive(registry_path):
    foreign = {"port": 7000, "pid": os.getpid(), "started": "t", "extra": [1]}
    write_raw(registry_path, json.dumps({"js": foreign}))
    default_registry().register("py", 7001)
    assert json.loads(registry_path.read_text())["js"] == foreign


def test_live_holder_keeps_its_id(registry_path, live_pid):
    reg = default_registry()
    reg.register("math", 5000, pid=live_pid)
    with pytest.raises(RegistryError, match=rf"'math'.*{live_pid}"):
        reg.register("math", 5001)
    assert reg.lookup("math") == ServiceEntry("math", 5000, live_pid, reg.lookup("math").started)


def test_dead_holder_is_taken_over(registry_path, dead_pid):
    reg = default_registry()
    reg.register("math", 5000, pid=dead_pid)
    assert not reg.lookup("math").alive
    entry = reg.register("math", 5002)
    assert reg.lookup("math") == entry and entry.pid == os.getpid() and entry.port == 5002


def test_owner_may_register_again(registry_path):
    reg = default_registry()
    reg.register("math", 5000)
    reg.register("math", 5003)
    assert reg.lookup("math").port == 5003


@pytest.mark.parametrize("port", [0, 65536, "80", True, 1.5])
def test_bad_port_is_rejected(port):
    with pytest.raises(ValueError):
        default_registry().register("x", port)


def test_unregister_only_by_the_owner(registry_path, live_pid):
    reg = default_registry()
    reg.register("theirs", 5004, pid=live_pid)
    reg.register("mine", 5005)
    assert reg.unregister("theirs") is False
    assert reg.unregister("mine", pid=live_pid) is False
    assert set(reg.entries()) == {"theirs", "mine"}
    assert reg.unregister("mine") is True
    assert reg.unregister("theirs", pid=live_pid) is True
    assert reg.entries() == {}
    assert reg.unregister("nothing") is False
    assert leftovers(registry_path) == []


def test_prune_removes_only_dead_entries(registry_path, live_pid, dead_pid):
    reg = default_registry()
    reg.register("dead1", 5006, pid=dead_pid)
    reg.register("live", 5007, pid=live_pid)
    reg.register("dead2", 5008, pid=dead_pid)
    assert sorted(reg.prune()) == ["dead1", "dead2"]
    assert set(reg.entries()) == {"live"}
    assert reg.prune() == []


def test_alive(monkeypatch, dead_pid):
    assert ServiceEntry("a", 1, os.getpid(), "").alive
    assert not ServiceEntry("a", 1, dead_pid, "").alive
    assert not ServiceEntry("a", 1, 0, "").alive
    assert not ServiceEntry("a", 1, -1, "").alive

    def forbidden(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", forbidden)
    assert ServiceEntry("a", 1, 12345, "").alive


def test_discover_returns_a_live_entry():
    reg = default_registry()
    entry = reg.register("svc", 5009)
    assert reg.discover("svc", timeout=1.0) == entry
    assert asyncio.run(reg.adiscover("svc", timeout=1.0)) == entry


class CountingRegistry(FileRegistry):
    """Signals each lookup so a test can act after discovery has started polling."""

    def __init__(self):
        super().__init__()
        self.polled = threading.Event()

    def lookup(self, service_id):
        self.polled.set()
        return super().lookup(service_id)


@pytest.mark.parametrize("use_async", [False, True])
def test_discover_waits_for_the_service_to_appear(use_async):
    reg = CountingRegistry()

    def register_later():
        assert reg.polled.wait(10)
        FileRegistry().register("late", 5010)

    t = threading.Thread(target=register_later)
    t.start()
    try:
        if use_async:
            entry = asyncio.run(reg.adiscover("late", timeout=10.0, poll_interval=0.01))
        else:
            entry = reg.discover("late", timeout=10.0, poll_interval=0.01)
    finally:
        t.join()
    assert entry.port == 5010


@pytest.mark.parametrize("use_async", [False, True])
def test_discover_timeout_names_id_and_path(registry_path, use_async):
    reg = default_registry()
    start = time.monotonic()
    with pytest.raises(ServiceNotFoundError) as info:
        if use_async:
            asyncio.run(reg.adiscover("nope", timeout=0.2, poll_interval=0.05))
        else:
            reg.discover("nope", timeout=0.2, poll_interval=0.05)
    assert time.monotonic() - start >= 0.2
    assert "'nope'" in str(info.value) and str(registry_path) in str(info.value)


def test_discover_ignores_a_dead_entry(dead_pid):
    reg = default_registry()
    reg.register("ghost", 5011, pid=dead_pid)
    with pytest.raises(ServiceNotFoundError, match=rf"'ghost'.*pid {dead_pid}"):
        reg.discover("ghost", timeout=0.1)


def make_lock(reg: FileRegistry, is_dir: bool, age: float = 0.0) -> Path:
    reg.path.parent.mkdir(parents=True, exist_ok=True)
    path = reg.dir_lock_path if is_dir else reg.lock_path
    if is_dir:
        path.mkdir()
    else:
        path.write_text("1")  # a live owner (init), not this process: only age makes it stale
    if age:
        old = time.time() - age
        os.utime(path, (old, old))
    return path


@pytest.mark.parametrize("is_dir", [False, True], ids=["file-lock", "dir-lock"])
def test_stale_lock_is_removed(registry_path, is_dir):
    reg = FileRegistry(lock_timeout=5.0)
    lock = make_lock(reg, is_dir, age=60)
    reg.register("svc", 5012)
    assert reg.lookup("svc").port == 5012
    assert not lock.exists()
    assert leftovers(registry_path) == []


@pytest.mark.parametrize("is_dir", [False, True], ids=["file-lock", "dir-lock"])
def test_a_lock_retaken_while_breaking_it_is_put_back(registry_path, monkeypatch, is_dir):
    reg = FileRegistry(lock_timeout=0.3)
    lock = make_lock(reg, is_dir, age=60)
    real_rename = os.rename
    raced = []

    def rename(src, dst):
        if Path(src) == lock and not raced:
            # Another waiter removes the stale lock and takes a fresh one right now.
            lock.rmdir() if is_dir else lock.unlink()
            make_lock(reg, is_dir)
            raced.append(os.stat(lock).st_ino)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(RegistryError, match=lock.name):
        reg.register("svc", 5016)
    assert raced and os.stat(lock).st_ino == raced[0]
    assert time.time() - lock.stat().st_mtime < 60
    assert leftovers(registry_path) == [lock.name]


@pytest.mark.parametrize("is_dir", [False, True], ids=["file-lock", "dir-lock"])
def test_held_lock_makes_a_writer_give_up(registry_path, is_dir):
    reg = FileRegistry(lock_timeout=0.3, stale_after=10.0)
    reg.register("before", 5013)
    before = registry_path.read_bytes()
    lock = make_lock(reg, is_dir)
    start = time.monotonic()
    with pytest.raises(RegistryError, match=rf"within 0.3 s.*{lock.name}"):
        reg.register("svc", 5014)
    assert time.monotonic() - start >= 0.3
    assert lock.exists()
    assert registry_path.read_bytes() == before
    # The lock that was free is not left behind.
    other = reg.lock_path if is_dir else reg.dir_lock_path
    assert not other.exists()


def test_held_js_dir_lock_blocks_a_writer_until_removed(registry_path):
    reg = FileRegistry(lock_timeout=30.0)
    lock = make_lock(reg, is_dir=True)
    result = {}

    def writer():
        try:
            result["entry"] = reg.register("svc", 5015)
        except Exception as exc:  # reported through the assertion below
            result["error"] = exc

    t = threading.Thread(target=writer)
    t.start()
    # The writer has taken the file lock and now waits for the directory lock.
    deadline = time.monotonic() + 10
    while not reg.lock_path.exists():
        assert time.monotonic() < deadline, "writer never took the file lock"
        time.sleep(0.005)
    assert t.is_alive()
    assert not registry_path.exists()
    lock.rmdir()
    t.join(20)
    assert not t.is_alive()
    assert "error" not in result
    assert reg.lookup("svc") == result["entry"]
    assert leftovers(registry_path) == []
