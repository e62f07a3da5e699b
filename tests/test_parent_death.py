"""The parent process dies (kill -9): its child exits within about a second whatever it runs,
and so does every process the child started in its session."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import CLIENTS, alive, wait_until
from multifrost import ParentWorker, TransportClosed

HERE = os.path.dirname(os.path.abspath(__file__))
PARENT_APP = os.path.join(HERE, "workers", "parent_app.py")
MATH = os.path.join(HERE, "workers", "math_worker.py")  # async methods too: served on asyncio
PLAIN = os.path.join(HERE, "workers", "plain_worker.py")  # plain methods only: served on child_loop.PollLoop


def _parent_app(mode, call, script=MATH):
    proc = subprocess.Popen([sys.executable, PARENT_APP, mode, script, json.dumps(call)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("pid "), line + proc.stderr.read()
    return proc, int(line.split()[1])


@pytest.mark.parametrize("what", ["idle", "plain method", "async method blocking the loop", "grandchild",
                                  "plain method of a worker on a PollLoop"])
def test_the_child_and_its_session_exit_soon_after_the_parent_is_killed(what, tmp_path):
    marker = str(tmp_path / "started")
    mode, call, script = {
        "idle": ("busy", ["add", [1, 2]], MATH),
        "plain method": ("busy", ["hold", [marker, 60]], MATH),
        "async method blocking the loop": ("busy", ["hold_loop", [marker, 60]], MATH),
        "grandchild": ("call", ["sleeper", [60]], MATH),
        "plain method of a worker on a PollLoop": ("busy", ["hold", [marker, 60]], PLAIN),
    }[what]
    proc, child = _parent_app(mode, call, script)
    grandchild = None
    try:
        if what == "grandchild":
            line = proc.stdout.readline()
            assert line.startswith("result "), line
            grandchild = int(line.split()[1])
            assert alive(grandchild)
        elif what != "idle":
            wait_until(lambda: os.path.exists(marker), "the child is in the method", timeout=30)
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        wait_until(lambda: not alive(child), "the orphaned child exited", timeout=10)
        took = time.monotonic() - killed
        if grandchild is not None:
            wait_until(lambda: not alive(grandchild), "the process the child started exited", timeout=10)
        print(f"{what}: the child exited {took:.2f} s after its parent was killed")
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
        if grandchild is not None and alive(grandchild):
            os.kill(grandchild, 9)


def test_ctrl_c_in_a_blocking_call_raises_at_once_and_still_stops_the_child(tmp_path):
    marker = str(tmp_path / "started")
    proc, child = _parent_app("call", ["hold", [marker, 60]])
    try:
        wait_until(lambda: os.path.exists(marker), "the child is in the method", timeout=30)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        assert proc.stdout.readline() == "interrupted\n"
        took = time.monotonic() - sent
        proc.wait(30)
        assert "KeyboardInterrupt" in proc.stderr.read()
        assert not alive(child), "the child outlived its parent"
        print(f"KeyboardInterrupt {took:.3f} s after SIGINT")
        assert took < 2.0  # generous: before, it came only after the child had been stopped (2.5 s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_close_with_a_stuck_child_takes_twice_the_grace_and_ends_its_session(api, tmp_path):
    marker = str(tmp_path / "started")
    client = CLIENTS[api](ParentWorker.spawn(MATH))
    client.start()
    closed = False
    try:
        grandchild = client.call("sleeper", 60)
        child = client.worker.pid
        outcome = client.fire([("hold", (marker, 60))])
        wait_until(lambda: os.path.exists(marker), "the child is in the method", timeout=30)
        started = time.monotonic()
        if api == "sync":
            client.worker.close(grace=0.2)
        else:
            client.run(client.worker.aclose(grace=0.2))
        took = time.monotonic() - started
        closed = True
        assert isinstance(outcome(30)[0], TransportClosed)
        assert not alive(child) and not alive(grandchild)
        print(f"close(grace=0.2) of a stuck child took {took:.2f} s")
        assert took < 2.0  # generous: 2 x grace plus reaping
    finally:
        if not closed:
            client.close()
        elif api == "async":
            client._stop_loop()


@pytest.mark.parametrize("grace", [-1, float("inf"), float("nan"), True, "1"])
def test_close_refuses_a_grace_that_is_not_a_finite_number(grace):
    worker = ParentWorker.spawn(MATH)
    with pytest.raises(ValueError, match="grace"):
        worker.close(grace=grace)
