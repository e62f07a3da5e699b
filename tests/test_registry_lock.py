"""The registry's write locks under Ctrl-C and dead owners: no lock is ever left behind by a
signal, and a lock whose owner is dead never makes the next writer wait."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from multifrost.errors import RegistryError
from multifrost.registry import FileRegistry

# Writes the registry in a loop. With "survive", every Ctrl-C is caught (as a notebook or a
# REPL would) and answered with whether a lock was left behind and whether the next write had
# to wait; with "die" the KeyboardInterrupt ends the process. "writing": back in the loop.
WRITER = """
import sys, time, traceback
from multifrost.registry import FileRegistry
reg = FileRegistry(sys.argv[1], lock_timeout=30)
survive = sys.argv[2] == "survive"
interrupts = left = slow = writes = inside = 0
while True:
    try:
        print("writing", flush=True)
        while True:
            reg.register("svc", 5000 + writes % 1000)
            reg.unregister("svc")
            writes += 1
    except KeyboardInterrupt as exc:
        if not survive:
            raise
        interrupts += 1
        inside += any("registry" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))
    left += reg.lock_path.exists() or reg.dir_lock_path.exists()
    started = time.monotonic()
    reg.register("probe", 6000)
    slow += time.monotonic() - started > 1.0
    print(f"interrupted {interrupts} left {left} slow {slow} inside {inside}", flush=True)
"""


def _expect(proc: subprocess.Popen, prefix: str) -> str:
    line = proc.stdout.readline()
    assert line.startswith(prefix), line + proc.stderr.read()
    return line


def _writer(registry_path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(registry_path), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def test_ctrl_c_at_random_points_never_leaves_a_lock(registry_path):
    registry_path.parent.mkdir(parents=True)
    proc = _writer(registry_path, "survive")
    rng = random.Random(11)
    try:
        for _ in range(300):
            _expect(proc, "writing")
            time.sleep(rng.uniform(0, 0.004))  # where in a write the signal lands: anywhere
            proc.send_signal(signal.SIGINT)
            report = _expect(proc, "interrupted").split()
            assert report[3] == "0" and report[5] == "0", f"a lock was left behind: {report}"
        assert int(report[7]) >= 100, f"too few signals landed in the registry code: {report}"
    finally:
        _stop(proc)


def test_ctrl_c_ending_a_writer_never_leaves_a_lock(registry_path):
    registry_path.parent.mkdir(parents=True)
    registry = FileRegistry(registry_path, lock_timeout=30)
    rng = random.Random(12)
    for _ in range(15):
        proc = _writer(registry_path, "die")
        try:
            _expect(proc, "writing")
            time.sleep(rng.uniform(0, 0.004))
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == -signal.SIGINT
        finally:
            _stop(proc)
        assert not registry.lock_path.exists() and not registry.dir_lock_path.exists()
        started = time.monotonic()
        registry.register("after", 5999)
        assert time.monotonic() - started < 1.0


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_whose_owner_is_dead_is_broken_at_once(registry_path, caplog):
    registry = FileRegistry(registry_path, lock_timeout=30, stale_after=3600)
    registry_path.parent.mkdir(parents=True)
    pid = _dead_pid()
    registry.lock_path.write_text(str(pid))  # fresh: only its dead owner makes it stale
    started = time.monotonic()
    registry.register("svc", 5001)
    assert time.monotonic() - started < 1.0
    assert registry.lookup("svc").port == 5001
    assert not registry.lock_path.exists()
    assert f"its owner, pid {pid}, is not running" in caplog.text


def test_a_lock_whose_owner_lives_is_waited_for(registry_path):
    registry = FileRegistry(registry_path, lock_timeout=0.3, stale_after=3600)
    registry_path.parent.mkdir(parents=True)
    owner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        registry.lock_path.write_text(str(owner.pid))
        started = time.monotonic()
        with pytest.raises(RegistryError) as raised:
            registry.register("svc", 5002)
        assert f"held by pid {owner.pid}" in str(raised.value) and "delete the lock" in str(raised.value)
        assert time.monotonic() - started >= 0.3
        assert registry.lock_path.read_text() == str(owner.pid)
    finally:
        owner.stdin.close()
        owner.wait()


def test_a_lock_left_by_this_process_is_broken_at_once(registry_path):
    """A lock with this process's pid that no running frame holds: an interrupted release left it."""
    registry = FileRegistry(registry_path, lock_timeout=30, stale_after=3600)
    registry_path.parent.mkdir(parents=True)
    registry.lock_path.write_text(str(os.getpid()))
    started = time.monotonic()
    registry.register("svc", 5003)
    assert time.monotonic() - started < 1.0 and not registry.lock_path.exists()


def test_a_lock_holds_its_owners_pid(registry_path):
    registry = FileRegistry(registry_path)
    with registry._locked():
        assert registry.lock_path.read_text() == str(os.getpid())
        assert registry.dir_lock_path.is_dir()
    assert not registry.lock_path.exists() and not registry.dir_lock_path.exists()


def _left_locked(registry: FileRegistry):
    """Take both locks in a frame that then returns without releasing them, as a Ctrl-C at the
    entry of ``__exit__`` would leave them; the caller keeps the object (its finalizer has not run)."""
    locks = registry._locked()
    locks.__enter__()
    return locks


def test_locks_left_by_an_interrupted_release_are_broken_at_once_in_this_process(registry_path):
    registry = FileRegistry(registry_path, lock_timeout=30, stale_after=3600)
    left = _left_locked(registry)
    assert registry.lock_path.exists() and registry.dir_lock_path.exists()
    started = time.monotonic()
    registry.register("svc", 5004)  # no running frame holds them: broken at once, both
    assert time.monotonic() - started < 1.0
    with registry._locked():
        del left  # its late release must not touch the locks held now
        assert registry.lock_path.read_text() == str(os.getpid()) and registry.dir_lock_path.is_dir()
    assert not registry.lock_path.exists() and not registry.dir_lock_path.exists()
    assert registry.lookup("svc").port == 5004


def test_freeing_a_released_lock_runs_no_python_code(registry_path):
    """A Ctrl-C that lands in Python code run by a deallocation (``__del__``, a finalizer) is
    swallowed ("Exception ignored in ..."): every write frees its lock object, so freeing one
    whose locks were released must run no Python code at all."""
    registry = FileRegistry(registry_path)
    registry_path.parent.mkdir(parents=True)
    locks = registry._locked()
    with locks:
        pass
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append((event, frame.f_code.co_name)))
    try:
        del locks
    finally:
        sys.setprofile(None)
    assert [call for call in calls if call[0] == "call"] == [], calls
