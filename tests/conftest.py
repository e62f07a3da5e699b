"""Shared fixtures: every test must leave no child process, thread, descriptor or asyncio task behind."""
import asyncio
import asyncio.runners
import os
import pathlib
import signal
import sys
import threading
import time

import pytest

# A suite started in the background of a non-interactive shell inherits SIGINT ignored, and so
# would every process it starts: the Ctrl-C tests need SIGINT to reach their processes.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKERS = os.path.join(HERE, "workers")
sys.path.insert(0, WORKERS)
# Spawned workers must import the multifrost under test, not whatever copy is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)


def _children() -> set[int]:
    """Pids of this process's live (not zombie) children."""
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry))
    return found


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.is_alive() and t.name.startswith("multifrost")}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="session", autouse=True)
def zmq_context():
    """Create the process-wide ZeroMQ context (and its descriptors) before any leak check counts."""
    from multifrost.transports import open_parent_end
    open_parent_end("tcp://127.0.0.1:0", bind=True).close()


@pytest.fixture(autouse=True)
def registry_path(tmp_path, monkeypatch) -> pathlib.Path:
    """Every test gets its own registry file; the real home directory is never touched."""
    path = tmp_path / "mf" / "services.json"
    monkeypatch.setenv("MULTIFROST_REGISTRY", str(path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return path


@pytest.fixture(autouse=True)
def no_leaks(request, zmq_context):
    """Fail a test that leaves a child process or a multifrost thread behind, or leaks descriptors."""
    children, threads, fds = _children(), _threads(), _fds()
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        left_children = _children() - children
        left_threads = _threads() - threads
        if not left_children and not left_threads and _fds() <= fds + 2:
            return
        time.sleep(0.02)
    assert not left_children, f"child processes left running: {left_children}"
    assert not left_threads, f"threads left running: {left_threads}"
    assert _fds() <= fds + 2, f"file descriptors leaked: {fds} before, {_fds()} after"


@pytest.fixture(autouse=True)
def no_pending_tasks(request, monkeypatch):
    """Fail a test when an event loop is closed, or asyncio.run() returns, with tasks still pending
    (asyncio.run would cancel them silently): what aclose() and serve() start they must also end."""
    left = []
    cancel_all, close = asyncio.runners._cancel_all_tasks, asyncio.BaseEventLoop.close

    def pending(loop):
        left.extend(repr(t) for t in asyncio.all_tasks(loop) if not t.done())

    def checked_cancel_all(loop):
        pending(loop)
        cancel_all(loop)

    def checked_close(loop):
        if not loop.is_closed():
            pending(loop)
        close(loop)

    monkeypatch.setattr(asyncio.runners, "_cancel_all_tasks", checked_cancel_all)
    monkeypatch.setattr(asyncio.BaseEventLoop, "close", checked_close)
    yield
    if not request.node.get_closest_marker("allow_leaks"):
        assert not left, f"asyncio tasks left pending: {left}"


def _need(available: bool, hint: str) -> None:
    """Skip with ``hint`` when a test's server is missing; in CI that is a failure instead."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{hint} (in CI these tests must run)")
    pytest.skip(hint)


@pytest.fixture(scope="session")
def redis_session():
    """A redis-server for the whole session (daemonized, on a free loopback port, no persistence)."""
    import redis_server
    _need(redis_server.available(), redis_server.ENABLE_HINT)
    server = redis_server.RedisServer().start()
    yield server
    server.remove()


@pytest.fixture
def redis_url(redis_session) -> str:
    """The session's Redis, emptied for this test."""
    redis_session.flush()
    return redis_session.url


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_leaks: the test checks leaks itself")


@pytest.fixture
def worker_script():
    return os.path.join(WORKERS, "math_worker.py")
