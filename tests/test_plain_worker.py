"""A worker without async methods is served on child_loop.PollLoop and never imports asyncio;
it does everything a worker does: calls, heartbeats, cancel and deadlines, streams,
the shutdown grace on SIGTERM/SIGINT, stopping from another thread (when its parent dies:
tests/test_parent_death.py; held replies to a client that never reads: tests/test_slow_reader.py)."""
import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from helpers import CLIENTS, alive, wait_until
from multifrost import CallTimeoutError, ParentWorker, RemoteCallError, WorkerCrashedError
from multifrost.child import ChildWorker

HERE = os.path.dirname(os.path.abspath(__file__))
PLAIN = os.path.join(HERE, "workers", "plain_worker.py")
LIVENESS = 30.0  # seconds: a generous bound for what should happen at once


def _spawn(api="sync", transport="tcp", grace=5.0, **options):
    client = CLIENTS[api](ParentWorker.spawn(PLAIN, transport=transport, default_timeout=LIVENESS,
                                             env={"SHUTDOWN_GRACE": str(grace)}, **options))
    client.start()
    return client


def _exit_code(client, pid):
    """Wait until the child has exited and the parent noticed; the exit code calls report."""
    wait_until(lambda: not alive(pid), "the child exited", timeout=LIVENESS)
    wait_until(lambda: not client.worker.is_healthy, "the parent noticed the exit", timeout=LIVENESS)
    with pytest.raises(WorkerCrashedError) as info:
        client.call("add", 1, 1)
    return info.value.exit_code


@pytest.mark.parametrize("transport", ["tcp", "ipc", "unix"])
def test_a_plain_worker_answers_calls_streams_and_cancels_without_asyncio(transport):
    client = _spawn(transport=transport)
    try:
        assert client.call("served_by") == ["PollLoop", []]
        assert client.many([("add", (i, 1)) for i in range(50)]) == [i + 1 for i in range(50)]
        assert list(client.worker.stream.rows(40, window=2)) == list(range(40))  # credit, a window at a time
        tag = uuid.uuid4().hex
        with pytest.raises(CallTimeoutError):
            client.call("poll_cancelled", tag, 60, timeout=0.3)
        status = wait_until(lambda: client.call("status", tag).get("reason"), "the method saw the cancel")
        assert "finished" not in client.call("status", tag) and client.call("status", tag)["deadline"]
        print(f"{transport}: cancelled with {status!r}")
        with pytest.raises(RemoteCallError, match="not found"):
            client.call("nothing_here")
        assert client.call("served_by") == ["PollLoop", []]  # still none after all of it
    finally:
        client.close()


def test_a_plain_worker_answers_heartbeats():
    client = _spawn(heartbeat_interval=0.2)
    try:
        wait_until(lambda: client.worker.last_heartbeat_rtt_ms is not None, "a heartbeat came back")
        assert client.worker.is_healthy
    finally:
        client.close()


def test_an_awaitable_a_plain_method_returns_is_awaited():
    client = _spawn()
    try:
        assert client.call("coroutine_result", 7) == 7
        assert client.call("served_by")[0] == "PollLoop"
    finally:
        client.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_calls_in_flight_finish_within_the_grace_then_exits_0(signum, tmp_path):
    flag = tmp_path / "go"
    client = _spawn(grace=30)
    try:
        results = client.fire([("block_until", (str(flag), 60))] * 3)
        wait_until(lambda: client.call("waiting") == 3, "every call started in the child")
        pid = client.worker.pid
        os.kill(pid, signum)

        def refused():
            try:
                client.call("add", 1, 1)
            except RemoteCallError as exc:
                return "Worker is shutting down" in str(exc)
            return False
        wait_until(refused, "the child refused new calls", timeout=LIVENESS)
        flag.write_text("go")
        assert results(LIVENESS) == [True] * 3  # answered during the grace
        assert _exit_code(client, pid) == 0
    finally:
        client.close()


def test_calls_past_the_grace_are_answered_with_an_error():
    client = _spawn(grace=0.2)
    try:
        results = client.fire([("block_until", ("/nonexistent/never", 60))] * 2)
        wait_until(lambda: client.call("waiting") == 2, "both calls started in the child")
        pid = client.worker.pid
        os.kill(pid, signal.SIGTERM)
        for outcome in results(LIVENESS):
            assert isinstance(outcome, RemoteCallError) and "stopped before the call finished" in str(outcome)
        assert _exit_code(client, pid) == 0  # a method stuck in a thread does not hold the exit
    finally:
        client.close()


def test_stop_from_another_thread_ends_the_worker():
    client = _spawn()
    try:
        pid = client.worker.pid
        assert client.call("stop_from_a_thread") is True
        assert _exit_code(client, pid) == 0
    finally:
        client.close()


def test_a_plain_service_process_never_imports_asyncio(registry_path):
    """Connect mode too (the registry's lookups load asyncio only when awaited); the service's
    held replies on this loop: tests/test_slow_reader.py."""
    service = subprocess.Popen([sys.executable, PLAIN, "plain"], stdin=subprocess.DEVNULL)
    try:
        with ParentWorker.connect("plain", timeout=LIVENESS, default_timeout=LIVENESS) as client:
            assert client.call.served_by() == ["PollLoop", []]
    finally:
        service.terminate()
        assert service.wait(30) == 0


def test_run_in_a_thread_serves_a_plain_service_until_stop_is_called():
    """No signals off the main thread: stop() from another thread ends run() (a PollLoop there)."""
    from plain_worker import PlainWorker

    worker, errors = PlainWorker("plain-in-a-thread"), []

    def run():
        try:
            worker.run()
        except BaseException as exc:  # reported below
            errors.append(exc)
    thread = threading.Thread(target=run, name="test-plain-service")
    thread.start()
    try:
        with ParentWorker.connect("plain-in-a-thread", timeout=LIVENESS, default_timeout=LIVENESS) as client:
            assert client.call.served_by()[0] == "PollLoop"
            assert client.call.add(2, 3) == 5
    finally:
        worker.stop()
        thread.join(LIVENESS)
    assert not thread.is_alive(), "stop() did not end run() in its thread"
    assert errors == []


class _Plain(ChildWorker):
    def work(self):
        yield 1

    @staticmethod
    def helper():
        return 1


class _AsyncPrivate(_Plain):
    async def _later(self):
        return 1


class _AsyncGen(_Plain):
    async def rows(self):
        yield 1


class _AsyncStatic(_Plain):
    @staticmethod
    async def tick():
        return 1


def test_only_a_worker_with_async_methods_needs_asyncio():
    assert not _Plain()._needs_asyncio() and not ChildWorker()._needs_asyncio()
    assert all(cls()._needs_asyncio() for cls in (_AsyncPrivate, _AsyncGen, _AsyncStatic))
    worker = _Plain()

    async def set_on_the_instance():
        return 1
    worker.extra = set_on_the_instance
    assert worker._needs_asyncio()


def test_a_credit_for_a_plain_generator_is_taken_without_an_error():
    """A plain generator's run has no asyncio event to set (it once raised AttributeError here,
    and the worker dropped every CREDIT message with a warning after applying it)."""
    from multifrost.child_streams import StreamRun

    run = StreamRun(_Plain(), b"peer", "id", None, 1, None)
    run.grant(2)
    assert run._allowed == 3
