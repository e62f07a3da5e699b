"""A client that sends calls and never reads its replies costs a service bounded memory and no
CPU, and other clients are served meanwhile."""
import os
import subprocess
import sys
import time

import pytest
import zmq

from helpers import cpu_seconds
from multifrost import ParentWorker, protocol
from multifrost.codec import pack_message
from multifrost.registry import FileRegistry

HERE = os.path.dirname(os.path.abspath(__file__))
MATH_SERVICE = os.path.join(HERE, "workers", "math_service.py")  # async methods too: served on asyncio
PLAIN_SERVICE = os.path.join(HERE, "workers", "plain_worker.py")  # plain methods only: on child_loop.PollLoop
BUDGET = 1024 * 1024


@pytest.mark.parametrize("script", [MATH_SERVICE, PLAIN_SERVICE], ids=["asyncio", "pollloop"])
def test_a_client_that_never_reads_is_bounded_and_others_are_served(script, registry_path, tmp_path):
    env = {**os.environ, "TEST_MAX_HELD_BYTES": str(BUDGET)}
    log_path = tmp_path / "service.log"
    with open(log_path, "wb") as log_file:
        service = subprocess.Popen([sys.executable, script, "slow"], env=env, stdin=subprocess.DEVNULL,
                                   stderr=log_file)
    ctx = zmq.Context()
    flooder = ctx.socket(zmq.DEALER)
    flooder.setsockopt(zmq.LINGER, 0)
    try:
        port = FileRegistry(str(registry_path)).discover("slow", timeout=30).port
        flooder.connect(f"tcp://127.0.0.1:{port}")
        with ParentWorker.connect("slow", timeout=30, default_timeout=30.0) as client:
            for _ in range(3000):  # 30 MB of replies: more than ZeroMQ's queues hold, then the budget
                flooder.send_multipart([b"", pack_message(protocol.call("make_bytes", [10_000]))])
            deadline = time.monotonic() + 60
            while True:
                held, dropped = client.call.backlog()
                assert client.call.add(1, 2) == 3  # served meanwhile
                if dropped:
                    break
                assert time.monotonic() < deadline, f"the service never dropped a reply (holds {held} bytes)"
            assert held <= BUDGET
            # Stuck with a client that does not read: the service does not spin.
            before, started = cpu_seconds(service.pid), time.monotonic()
            while time.monotonic() - started < 1.0:
                assert client.call.add(2, 2) == 4
                time.sleep(0.05)
            assert cpu_seconds(service.pid) - before < 0.5 * (time.monotonic() - started)
            flooder.close(0)  # gone with replies still held: dropped, a line or two in the log
            deadline = time.monotonic() + 30
            while client.call.backlog()[0]:
                assert time.monotonic() < deadline, "replies to a gone client are held for ever"
                time.sleep(0.05)
    finally:
        flooder.close(0)
        ctx.term()
        service.terminate()
        assert service.wait(30) == 0
    lines = [line for line in log_path.read_text().splitlines() if "dropped a reply" in line]
    assert 1 <= len(lines) <= 4, lines
