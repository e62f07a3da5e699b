"""Faults and what the user sees: heartbeats, crashes, restarts, a wedged child, shutdown grace,
and processes that die or are signalled. Every wait is a condition with a deadline."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import CLIENTS, alive, wait_until
from multifrost import CallTimeoutError, ParentWorker, RemoteCallError, WorkerCrashedError
from multifrost.registry import FileRegistry

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = os.path.join(HERE, "workers")
MATH = os.path.join(WORKERS, "math_worker.py")
SLOW = os.path.join(WORKERS, "slow_worker.py")
FLAKY = os.path.join(WORKERS, "flaky_start.py")
PARENT_APP = os.path.join(WORKERS, "parent_app.py")


@pytest.fixture(params=["sync", "async"])
def api(request):
    return request.param


@pytest.fixture(params=["tcp", "unix"])
def transport(request):
    """The spawn transport: ZeroMQ over tcp, or the native unix:// sockets."""
    return request.param


# -- heartbeats ---------------------------------------------------------------------------

def test_heartbeats_measure_rtt_while_busy_and_can_be_turned_off(api, transport):
    beating = CLIENTS[api](ParentWorker.spawn(MATH, heartbeat_interval=0.02, transport=transport))
    silent = CLIENTS[api](ParentWorker.spawn(MATH, heartbeat_interval=0, transport=transport))
    beating.start()
    silent.start()
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # keep both busy: a caller leads the socket all along
            assert beating.call("add", 1, 2) == 3 and silent.call("add", 1, 2) == 3
        wait_until(lambda: beating.worker.last_heartbeat_rtt_ms is not None, "a heartbeat came back")
        assert 0 <= beating.worker.last_heartbeat_rtt_ms < 1000  # measured on arrival, not when noticed
        assert beating.worker.is_healthy
        assert silent.worker.last_heartbeat_rtt_ms is None and silent.worker.is_healthy
    finally:
        beating.close()
        silent.close()


def test_wedged_child_turns_unhealthy_and_recovers(api, transport):
    """SIGSTOP: heartbeats miss, the worker is unhealthy, calls time out; SIGCONT: healthy again."""
    client = CLIENTS[api](ParentWorker.spawn(MATH, transport=transport, heartbeat_interval=0.05, heartbeat_timeout=0.2,
                                             heartbeat_max_misses=2))
    client.start()
    pid = client.worker.pid
    try:
        wait_until(lambda: client.worker.last_heartbeat_rtt_ms is not None, "a heartbeat came back")
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: not client.worker.is_healthy, "the wedged worker turned unhealthy")
        with pytest.raises(CallTimeoutError):
            client.call("add", 1, 2, timeout=0.3)
        assert not client.worker.circuit_open  # one run of misses is one failure, below the threshold
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: client.worker.is_healthy, "the worker answered heartbeats again")
        assert client.call("add", 2, 3, timeout=10) == 5
        assert client.worker.pid == pid
    finally:
        os.kill(pid, signal.SIGCONT)
        client.close()


# -- crashes ------------------------------------------------------------------------------

@pytest.mark.parametrize("auto_restart", [False, True], ids=["no-restart", "auto-restart"])
def test_kill9_with_1000_calls_in_flight(api, transport, auto_restart):
    client = CLIENTS[api](ParentWorker.spawn(MATH, transport=transport, auto_restart=auto_restart, default_timeout=60.0,
                                             heartbeat_interval=0))
    client.start()
    try:
        pid = client.worker.pid
        # asleep(8) outlasts the kill by far; a call whose thread starts only after the kill (the
        # sync API starts a thread per call) waits for the restart and then runs: it may succeed.
        calls = [("asleep", (8,)) if i % 2 else ("add", (i, 1)) for i in range(1000)]
        results = client.fire(calls)
        wait_until(lambda: client.worker.metrics.requests >= 1000 and client.worker.metrics.in_flight >= 500,
                   "all calls started and 500 in flight")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        outcomes = results(30)
        resolved_in = time.monotonic() - killed
        late = 0
        for (function, args), outcome in zip(calls, outcomes):
            if not isinstance(outcome, Exception):
                assert outcome == (args[0] + 1 if function == "add" else args[0])
                late += function == "asleep"
            else:
                assert isinstance(outcome, WorkerCrashedError), outcome
                assert outcome.exit_code == -signal.SIGKILL and "SIGKILL" in str(outcome)
        assert late == 0 or auto_restart, "without a restart no sleeping call can succeed"
        assert sum(isinstance(o, WorkerCrashedError) for o in outcomes) >= 500 - late
        if not late:
            assert resolved_in < 8, f"calls took {resolved_in:.2f} s to fail after the kill"
        if auto_restart:
            following = client.fire([("add", (i, 2)) for i in range(1000)])(60)
            assert following == [i + 2 for i in range(1000)]
            assert client.worker.pid != pid and client.worker.metrics.restarts == 1
            assert client.worker.is_healthy
        else:
            with pytest.raises(WorkerCrashedError):
                client.call("add", 1, 2)
    finally:
        client.close()


def test_calls_wait_for_a_restart_within_their_timeout(api, transport, tmp_path):
    hold = tmp_path / "hold"
    client = CLIENTS[api](ParentWorker.spawn(FLAKY, transport=transport, auto_restart=True, heartbeat_interval=0, env={
        "STARTS_FILE": str(tmp_path / "starts"), "HOLD_FLAG": str(hold)}))
    client.start()
    try:
        hold.write_text("")  # the restarted child waits for the test before it serves
        with pytest.raises(WorkerCrashedError) as info:
            client.call("crash", 3, timeout=30)
        assert info.value.exit_code == 3 and "about to crash with 3" in info.value.stderr_tail
        with pytest.raises(CallTimeoutError, match="did not come back"):
            client.call("add", 1, 1, timeout=0.2)
        waiting = client.fire([("add", (5, 5))])
        wait_until(lambda: (tmp_path / "starts").read_text().count("\n") == 2, "the restart began")
        hold.unlink()
        assert waiting(30) == [10]
        assert client.worker.metrics.restarts == 1
    finally:
        client.close()


# -- the child's shutdown ----------------------------------------------------------------

def _slow_client(api, grace, transport):
    return CLIENTS[api](ParentWorker.spawn(SLOW, transport=transport, default_timeout=30.0, heartbeat_interval=0,
                                           env={"SHUTDOWN_GRACE": str(grace)}))


def _until_refused(client):
    """Call until the child answers "shutting down" (it took SIGTERM and refuses new calls)."""
    def refused():
        try:
            client.call("add", 1, 1, timeout=10)
        except RemoteCallError as exc:
            assert "Worker is shutting down" in str(exc)
            return True
        return False
    wait_until(refused, "the child refused new calls")


def _exit_code(client, pid):
    """Wait until the child has exited and the parent noticed; returns the exit code calls report."""
    wait_until(lambda: not alive(pid), "the child exited")
    wait_until(lambda: not client.worker.is_healthy, "the parent noticed the exit")
    with pytest.raises(WorkerCrashedError) as info:
        client.call("add", 1, 1)
    return info.value.exit_code


def test_sigterm_child_finishes_calls_in_flight_then_exits_0(api, transport, tmp_path):
    flag = tmp_path / "go"
    client = _slow_client(api, grace=30, transport=transport)
    client.start()
    try:
        calls = [("block_until", (str(flag), 30))] * 3 + [("await_until", (str(flag), 30))] * 10
        results = client.fire(calls)
        wait_until(lambda: client.call("waiting") == len(calls), "every call started in the child")
        pid = client.worker.pid
        os.kill(pid, signal.SIGTERM)
        _until_refused(client)
        flag.write_text("go")
        assert results(30) == [True] * len(calls)  # answered during the grace
        assert _exit_code(client, pid) == 0
    finally:
        client.close()


def test_sigterm_child_answers_calls_past_the_grace_with_an_error(api, transport, tmp_path):
    client = _slow_client(api, grace=0.2, transport=transport)
    client.start()
    try:
        never = str(tmp_path / "never")
        results = client.fire([("block_until", (never, 60)), ("await_until", (never, 60))])
        wait_until(lambda: client.call("waiting") == 2, "both calls started in the child")
        stopped, pid = time.monotonic(), client.worker.pid
        os.kill(pid, signal.SIGTERM)
        outcomes = results(30)
        for outcome in outcomes:
            assert isinstance(outcome, RemoteCallError) and "stopped before the call finished" in str(outcome)
        assert _exit_code(client, pid) == 0  # a method stuck in a thread does not hold the exit
        assert time.monotonic() - stopped < 15
    finally:
        client.close()


def test_sigterm_service_answers_calls_in_flight_unregisters_and_exits_0(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIFROST_REGISTRY", str(tmp_path / "services.json"))
    flag = tmp_path / "go"
    service = subprocess.Popen([sys.executable, SLOW, "slow"], env={**os.environ, "SHUTDOWN_GRACE": "30"})
    try:
        FileRegistry().discover("slow", timeout=30)
        client = CLIENTS["async"](ParentWorker.connect("slow", default_timeout=30.0, heartbeat_interval=0))
        client.start()
        try:
            calls = [("block_until", (str(flag), 30))] * 2 + [("await_until", (str(flag), 30))] * 5
            results = client.fire(calls)
            wait_until(lambda: client.call("waiting") == len(calls), "every call started in the service")
            service.terminate()
            _until_refused(client)
            flag.write_text("go")
            assert results(30) == [True] * len(calls)
            assert service.wait(30) == 0
            assert FileRegistry().lookup("slow") is None
        finally:
            client.close()
    finally:
        if service.poll() is None:
            service.kill()
        service.wait()


# -- the parent process dies or is signalled --------------------------------------------

def _parent_app(mode):
    proc = subprocess.Popen([sys.executable, PARENT_APP, mode, MATH], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("pid "), line + proc.stderr.read()
    return proc, int(line.split()[1])


def test_child_exits_when_its_parent_is_killed():
    proc, child = _parent_app("default")
    try:
        assert alive(child)
        proc.kill()
        proc.wait()
        wait_until(lambda: not alive(child), "the orphaned child exited", timeout=10)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("mode, signum, returncode, says", [
    ("default", signal.SIGTERM, -signal.SIGTERM, ""),
    ("default", signal.SIGINT, -signal.SIGINT, ""),  # KeyboardInterrupt, unhandled
    ("user", signal.SIGTERM, 7, "user handler ran; child gone"),  # ours ran first, then theirs
    ("async", signal.SIGTERM, -signal.SIGTERM, ""),
    ("atexit", None, 0, ""),
    ("thread", None, 0, "handler default"),  # no handlers installed from another thread
    ("ignored", None, 0, "sigint ignored"),  # an ignored signal stays ignored
])
def test_parent_exit_stops_its_children(mode, signum, returncode, says):
    proc, child = _parent_app(mode)
    try:
        if signum is not None:
            assert alive(child)
            proc.send_signal(signum)
        proc.stdin.close()
        proc.wait(30)
        out, err = proc.stdout.read(), proc.stderr.read()  # the same buffered readers readline() used
        assert proc.returncode == returncode, err
        assert says in out
        if signum == signal.SIGINT:
            assert "KeyboardInterrupt" in err
        assert not alive(child), "the child outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
