"""End-to-end behaviour of ParentWorker and ChildWorker over every transport, sync and async."""
import datetime as dt
import math
import os
import time

import pytest

from helpers import CLIENTS
from math_worker import MathWorker, OtherNamespace
from multifrost import (CallTimeoutError, ParentWorker, PayloadError, RemoteCallError, WorkerCrashedError,
                        WorkerStartError)

KINDS = ["spawn-tcp", "spawn-ipc", "spawn-unix", "memory", "inproc"]


def make_worker(kind, script, **options):
    if kind.startswith("spawn-"):
        return ParentWorker.spawn(script, transport=kind.split("-")[1], **options)
    worker = OtherNamespace() if options.pop("env", {}).get("TEST_NAMESPACE") == "math" else MathWorker()
    options.pop("heartbeat_interval", None)
    return ParentWorker.inprocess(worker, transport=kind, **options)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(params=["sync", "async"])
def api(request):
    return request.param


@pytest.fixture
def client(kind, api, worker_script):
    client = CLIENTS[api](make_worker(kind, worker_script, default_timeout=20.0))
    client.start()
    yield client
    client.close()


def test_add(client):
    assert client.call("add", 1, 2) == 3
    assert client.call("aadd", 2, 3) == 5


VALUES = [
    None, True, False, 0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -2**63, -0.0, 1e308, 1.5,
    "", "héllo ✓ 漢字 🎉", b"", b"\x00\xffbytes", [1, [2, [3]]], {"a": {"b": [1, "x"]}},
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
]


def test_values_round_trip(client):
    for value in VALUES:
        result = client.call("echo", value)
        assert result == value and type(result) is type(value), value


def test_values_sanitized(client):
    assert client.call("echo", float("nan")) is None
    assert client.call("echo", [float("inf"), -math.inf]) == [None, None]
    assert client.call("echo", (1, (2, 3))) == [1, [2, 3]]
    assert client.call("echo", {1: "one"}) == {"1": "one"}
    assert client.call("echo", bytearray(b"ab")) == b"ab"
    assert client.call("echo_all") == []
    assert client.call("echo_all", 1, "two", None) == [1, "two", None]


def test_unsendable_argument_raises_before_sending(client):
    with pytest.raises(PayloadError, match=r"set.*args\[0\]|args\[0\].*set"):
        client.call("echo", {1, 2})
    with pytest.raises(PayloadError):
        client.call("echo", 2**64)
    assert client.call("add", 1, 1) == 2


def test_remote_exception_has_type_and_traceback(client):
    with pytest.raises(RemoteCallError) as info:
        client.call("fail", "boom")
    assert str(info.value) == "boom"
    assert info.value.remote_type == "ValueError"
    assert "Traceback" in info.value.remote_traceback and "raise ValueError" in info.value.remote_traceback


@pytest.mark.parametrize("name, text", [
    ("_secret", "Cannot call private method '_secret'"),
    ("nope", "Function 'nope' not found"),
    ("limit", "'limit' is not callable"),
    ("run", "Function 'run' not found"),
    ("list_functions", "Function 'list_functions' not found"),
    ("stop", "Function 'stop' not found"),
])
def test_dispatch_errors(client, name, text):
    with pytest.raises(RemoteCallError) as info:
        client.call(name)
    assert str(info.value).startswith(text)


def test_result_that_cannot_be_sent_is_an_error(client):
    with pytest.raises(RemoteCallError, match="cannot be sent"):
        client.call("unencodable")
    assert client.call("add", 2, 2) == 4


def test_other_namespace_is_never_answered(client):
    with pytest.raises(CallTimeoutError):
        client.call("add", 1, 2, namespace="elsewhere", timeout=0.3)
    assert client.call("add", 1, 2, namespace="default") == 3


def test_timeout_then_late_reply_is_dropped(client):
    with pytest.raises(CallTimeoutError):
        client.call("sleep", 0.5, timeout=0.1)
    assert client.worker._channel.in_flight == 0
    assert client.call("sleep", 0.6) == 0.6  # the late reply of the first call does not confuse this one
    assert client.worker._channel.in_flight == 0


def test_many_concurrent_calls(client):
    count = 1000 if client.api == "async" else 64
    results = client.many([("add", (i, i)) for i in range(count)])
    assert results == [2 * i for i in range(count)]


def test_blocking_method_does_not_block_others(client, tmp_path):
    flag = tmp_path / "go"

    import threading
    done = {}

    def slow():
        done["slow"] = client.call("wait_for", str(flag), 10.0)

    t = threading.Thread(target=slow)
    t.start()
    try:
        assert client.call("add", 5, 5) == 10  # answered while wait_for blocks a pool thread
        assert client.call("asleep", 0.01) == 0.01
    finally:
        flag.write_text("go")
        t.join()
    assert done["slow"] is True


def test_keyword_arguments_are_rejected(kind, worker_script):
    worker = make_worker(kind, worker_script)
    with pytest.raises(TypeError, match="positional arguments only"):
        worker.call.add(1, b=2)
    with pytest.raises(TypeError, match="positional arguments only"):
        worker.call.with_options(retries=3)


def test_call_proxy_and_options(kind, worker_script):
    with make_worker(kind, worker_script) as worker:
        assert worker.call.add(1, 2) == 3
        assert worker.call.add(1, 2, timeout=5.0) == 3
        assert worker.call.with_options(timeout=5.0, namespace="default").add(3, 4) == 7
        assert worker.call_function("add", [1, 2], timeout=5.0, namespace="default") == 3
        with pytest.raises(RuntimeError, match="start"):
            worker.acall_function("add", [1, 2]).send(None)


def test_async_proxy(kind, worker_script):
    import asyncio

    async def main():
        async with make_worker(kind, worker_script) as worker:
            assert await worker.acall.add(1, 2) == 3
            assert await worker.acall.with_options(timeout=2.0).add(1, 2) == 3
            assert await worker.acall_function("add", [1, 2]) == 3
            assert worker.is_healthy
            with pytest.raises(RuntimeError, match="astart"):
                worker.call.add(1, 2)
    asyncio.run(main())


def test_not_started(worker_script):
    worker = ParentWorker.spawn(worker_script)
    with pytest.raises(RuntimeError, match="not started"):
        worker.call.add(1, 2)
    worker.close()  # closing a worker that never started is fine


@pytest.mark.parametrize("api", ["sync", "async"])
def test_stdout_and_stderr_reach_the_parent(api, worker_script):
    seen = []
    client = CLIENTS[api](ParentWorker.spawn(worker_script, on_output=lambda stream, text: seen.append((stream, text))))
    client.start()
    try:
        assert client.call("say", "hello from the child") == len("hello from the child")
        assert client.call("warn", "careful") is True
        deadline = __import__("time").monotonic() + 10
        while len(seen) < 2 and __import__("time").monotonic() < deadline:
            client.call("add", 0, 0)
    finally:
        client.close()
    assert ("stdout", "hello from the child\n") in seen
    assert ("stderr", "careful\n") in seen


def test_stdout_goes_to_logging_by_default(worker_script, caplog):
    import logging
    import time
    caplog.set_level(logging.INFO, logger="multifrost.child_output")
    with ParentWorker.spawn(worker_script) as worker:
        worker.call.say("logged line")
        deadline = time.monotonic() + 10
        while "logged line" not in caplog.text and time.monotonic() < deadline:
            worker.call.add(0, 0)
    assert "[math_worker.py] logged line" in caplog.text


@pytest.mark.parametrize("api", ["sync", "async"])
def test_start_failures(api, tmp_path):
    missing = CLIENTS[api](ParentWorker.spawn(str(tmp_path / "missing.py")))
    with pytest.raises(WorkerStartError, match="not found"):
        missing.start()

    no_exe = CLIENTS[api](ParentWorker.spawn("x.js", executable=str(tmp_path / "no-such-node")))
    with pytest.raises(WorkerStartError, match="cannot start"):
        no_exe.start()

    early = tmp_path / "early.py"
    early.write_text("import sys\nsys.stderr.write('broken worker\\n')\nsys.exit(7)\n")
    client = CLIENTS[api](ParentWorker.spawn(str(early)))
    with pytest.raises(WorkerStartError) as info:
        client.start()
    assert info.value.exit_code == 7 and "broken worker" in info.value.stderr_tail
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no unanswered probe chained to it

    silent = tmp_path / "silent.py"
    silent.write_text("import time\ntime.sleep(60)\n")
    client = CLIENTS[api](ParentWorker.spawn(str(silent), start_timeout=0.5))
    with pytest.raises(WorkerStartError, match="did not answer"):
        client.start()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_child_that_exits_before_answering_fails_the_start_within_milliseconds(api, tmp_path):
    """Start-up probes go every 5 ms for the first 100 ms (not every 250 ms): the exit is seen at once."""
    script = tmp_path / "gone.sh"
    script.write_text("exit 3\n")
    client = CLIENTS[api](ParentWorker.spawn(str(script), executable="/bin/sh"))
    began = time.monotonic()
    with pytest.raises(WorkerStartError) as info:
        client.start()
    assert info.value.exit_code == 3
    assert time.monotonic() - began < 0.2


def test_child_without_parent_env_exits_fatal(worker_script):
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("COMLINK_ZMQ_PORT", "MULTIFROST_ENDPOINT")}
    for port in ("abc", "80", "70000"):
        proc = subprocess.run([sys.executable, worker_script], env={**env, "COMLINK_ZMQ_PORT": port},
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and proc.stderr.startswith("FATAL:"), proc.stderr
    proc = subprocess.run([sys.executable, worker_script], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and proc.stderr.startswith("FATAL:")


@pytest.mark.parametrize("api", ["sync", "async"])
def test_crash_fails_calls_in_flight_at_once(api, worker_script):
    client = CLIENTS[api](ParentWorker.spawn(worker_script))
    client.start()
    try:
        with pytest.raises(WorkerCrashedError) as info:
            client.call("crash", 3, timeout=30)
        assert info.value.exit_code == 3
        assert "about to crash with 3" in info.value.stderr_tail
        with pytest.raises(WorkerCrashedError):
            client.call("add", 1, 2, timeout=5)
    finally:
        client.close()


def test_close_leaves_nothing_behind(worker_script):
    worker = ParentWorker.spawn(worker_script)
    worker.start()
    pid = worker.pid
    worker.close()
    worker.close()  # idempotent
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_list_functions():
    assert MathWorker().list_functions() == [
        "aadd", "add", "asleep", "backlog", "crash", "echo", "echo_all", "fail", "hold", "hold_loop", "length",
        "make_bytes", "make_list", "pid", "say", "sleep", "sleeper", "threads", "unencodable", "wait_for", "waits_by", "warn"]


def test_quick_method_that_blocks_later_is_covered_by_the_watchdog(client, tmp_path):
    """A method proven quick runs inline; when it then blocks, heartbeats and calls still go through."""
    import threading
    flag = tmp_path / "go"
    flag.write_text("")
    for _ in range(3):
        assert client.call("wait_for", str(flag), 10.0) is True  # quick: earns its inline place
    flag.unlink()
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("slow", client.call("wait_for", str(flag), 10.0)))
    t.start()
    try:
        for i in range(5):
            assert client.call("add", i, 1) == i + 1
        if client.api == "sync":
            assert client.worker.ping(timeout=5.0) >= 0
    finally:
        flag.write_text("go")
        t.join()
    assert done["slow"] is True


def test_an_async_calls_task_leaves_the_worker_by_itself_when_it_answers(api):
    """``_run_async`` drops its own task from the worker's set (no done callback, so no extra loop turn)."""
    child = MathWorker()
    client = CLIENTS[api](ParentWorker.inprocess(child, transport="memory"))
    client.start()
    try:
        for n in range(20):
            assert client.call("aadd", n, 1) == n + 1
        assert child._tasks == set()  # each task left before its reply was sent
    finally:
        client.close()


def test_a_task_cancelled_before_it_started_is_forgotten_when_the_worker_stops():
    """A call's task cancelled by the stop before its first step never ran its own cleanup; the stop forgets it."""
    import asyncio
    import threading

    from multifrost.child_shutdown import abandon_in_flight

    child = MathWorker()

    async def main():
        child._loop, child._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        child._start_task(b"peer", "id", child.aadd, [1, 2])
        (task,) = child._tasks
        await abandon_in_flight(child)
        assert task.cancelled() and child._tasks == set()
    asyncio.run(main())


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_close_sends_shutdown_only_while_no_other_thread_uses_the_end(worker_script, transport):
    """The end is not thread-safe (a ZeroMQ socket least of all): close() from one thread must
    not send its SHUTDOWN while a caller's thread holds the end (as the leader does in a pass)."""
    import threading
    worker = ParentWorker.spawn(worker_script, transport=transport)
    worker.start()
    assert worker.call.add(1, 2) == 3
    channel = worker._sync.channel
    end, send = channel.end, channel.end.send_nowait
    held, seen = threading.Event(), []

    def watched(payload):
        seen.append(held.is_set())
        return send(payload)
    end.send_nowait = watched
    channel._io.acquire()
    held.set()
    closer = threading.Thread(target=worker.close)
    closer.start()
    closer.join(0.3)  # time for a close that ignored the lock to send
    held.clear()
    channel._io.release()
    closer.join(30)
    assert not closer.is_alive() and seen and not any(seen)
