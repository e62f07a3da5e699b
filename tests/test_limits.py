"""Messages over the limits: refused before they are sent, never left waiting for.

The sender checks what the receiver would refuse (the decode limits and the transport's
maximum message size) before anything goes out; a reply the receiver drops anyway fails
its call at once; a caller whose call a child drops is answered with ERROR.
"""
import os
import subprocess
import sys
import time

import pytest

from helpers import CLIENTS
import msgpack

from multifrost import (ParentWorker, PayloadError, ProtocolError, RemoteCallError, TransportError,
                        WorkerCrashedError, protocol)
from multifrost.codec import Limits, pack_message
from test_hostile import GARBAGE_ROUTER, RawParent, _serving

HERE = os.path.dirname(os.path.abspath(__file__))
MATH = os.path.join(HERE, "workers", "math_worker.py")
MiB = 1024 * 1024


@pytest.fixture
def raw_parent():
    """A spawned child and the raw ZeroMQ DEALER it connected to (unix:// has its own tests)."""
    yield from _serving(RawParent())


@pytest.fixture(params=["sync", "async"])
def client(request):
    client = CLIENTS[request.param](ParentWorker.spawn(MATH, default_timeout=60.0))
    client.start()
    yield client
    client.close()


OVER_LIMITS = {  # made when the test runs: big values must not live in test ids or at collection
    "70 MiB bytes": (lambda: b"\0" * (70 * MiB), "max_bin_len"),
    "64 MiB + 1 bytes": (lambda: b"\0" * (64 * MiB + 1), "max_bin_len"),
    "64 MiB + 1 str": (lambda: "x" * (64 * MiB + 1), "max_str_len"),
    "1,000,001 items": (lambda: [0] * 1_000_001, "max_array_len"),
    "1,000,001 keys": (lambda: dict.fromkeys(map(str, range(1_000_001)), 0), "max_map_len"),
}


@pytest.mark.parametrize("case", list(OVER_LIMITS))
def test_an_argument_over_a_limit_raises_before_it_is_sent(client, case):
    make, limit = OVER_LIMITS[case]
    argument = make()
    started = time.monotonic()
    with pytest.raises(PayloadError, match=rf"args\[0\].*{limit}"):
        client.call("length", argument)
    assert time.monotonic() - started < 30, "the check must not wait for anything"
    assert client.call("add", 1, 2) == 3
    assert client.worker.is_healthy
    assert client.worker.metrics.snapshot()["requests_total"] >= 1


def test_a_message_over_the_transport_size_is_refused(client):
    """No single value is over a limit, but the message is over the 65 MiB max message size."""
    with pytest.raises(PayloadError, match="max_message_size"):
        client.call("echo_all", *([b"\0" * (16 * MiB)] * 5))
    assert client.call("add", 2, 2) == 4


@pytest.mark.parametrize("function, n, limit", [
    ("make_bytes", 70 * MiB, "max_bin_len"),
    ("make_list", 1_000_001, "max_array_len"),
])
def test_a_result_over_a_limit_is_answered_with_an_error(client, function, n, limit):
    with pytest.raises(RemoteCallError, match=limit):
        client.call(function, n)
    assert client.call("add", 3, 4) == 7
    assert client.call("length", b"\0" * MiB) == MiB  # big but allowed still works


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_reply_the_parent_drops_fails_its_call_at_once(api):
    """The parent's limits are tighter than the child's: the child sends a reply the parent
    refuses; the call fails with ProtocolError at once (no timeout is given at all)."""
    client = CLIENTS[api](ParentWorker.spawn(MATH, limits=Limits(max_array_len=10)))
    client.start()
    try:
        with pytest.raises(ProtocolError, match="dropped.*max_array_len"):
            client.call("make_list", 100)
        assert client.call("make_list", 10) == [0] * 10
    finally:
        client.close()


def test_a_call_the_child_drops_is_answered_with_an_error(raw_parent):
    """A parent with other limits sends a call nested deeper than the child accepts: the
    child drops it and answers ERROR to its id, and goes on serving."""
    deep: list = []
    for _ in range(600):
        deep = [deep]
    message = protocol.call("echo", [deep])
    raw_parent.send([b"", pack_message(message, max_depth=1000)])
    reply = raw_parent.call("add", [1, 1])
    assert reply["result"] == 2
    # the ERROR to the dropped call came first (replies leave in order)
    raw_parent.send([b"", pack_message(message, max_depth=1000)])
    deadline = time.monotonic() + 30
    while True:
        assert raw_parent.sock.poll(int(max(0, deadline - time.monotonic()) * 1000)), "no answer to the dropped call"
        answer = msgpack.unpackb(raw_parent.sock.recv_multipart()[-1])
        if answer.get("id") == message["id"]:
            break
    assert answer["type"] == "error" and "max_depth" in answer["error"]


def test_a_frame_past_the_size_limit_does_not_make_a_spawned_child_deaf(raw_parent):
    """ZeroMQ cuts the child's connection for a frame over 65 MiB and never dials again by
    itself; the child does. A raw parent's call queued behind the frame is lost with the
    connection (a multifrost parent fails it at once); a later one is answered."""
    raw_parent.send([b"", b"\x00" * (66 * MiB)])
    deadline = time.monotonic() + 10
    while True:
        try:
            assert raw_parent.call("add", [20, 22], timeout=1.0)["result"] == 42
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the child never answered again"
    assert raw_parent.proc.poll() is None


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_connection_cut_by_an_oversize_reply_fails_the_call_at_once_and_comes_back(api):
    """A foreign worker (raw pyzmq, no limits) answers with a frame over the parent's 65 MiB
    maximum: ZeroMQ cuts that connection; the call fails at once with TransportError (it
    has no timeout at all), the connection comes back, and the next call succeeds."""
    client = CLIENTS[api](ParentWorker.spawn(GARBAGE_ROUTER, transport="tcp", on_output=lambda stream, text: None))
    client.start()
    try:
        with pytest.raises(TransportError, match="dropped"):
            client.call("huge", 66 * MiB)
        assert client.call("bounce", [], 5, timeout=30.0) == 5
        assert client.call("huge", MiB, timeout=30.0) == b"\0" * MiB
    finally:
        client.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_connect_mode_parent_whose_connection_an_oversize_reply_cut_dials_again(api, registry_path):
    """A foreign service answers with a frame over 65 MiB: ZeroMQ cuts the parent's connection
    and would never dial it again; the parent does, its call fails at once (WorkerCrashedError,
    as for a service that went away: a client cannot tell the two apart), and the next calls are
    answered."""
    service = subprocess.Popen([sys.executable, GARBAGE_ROUTER, "foreign"], stdin=subprocess.DEVNULL)
    try:
        client = CLIENTS[api](ParentWorker.connect("foreign", timeout=30, heartbeat_interval=0))
        client.start()
        try:
            assert client.call("bounce", [], 1, timeout=30.0) == 1
            with pytest.raises(WorkerCrashedError, match="dropped"):
                client.call("huge", 66 * MiB)  # no timeout at all: it must fail by itself
            assert client.call("bounce", [], 2, timeout=30.0) == 2
            assert client.call("huge", MiB, timeout=30.0) == b"\0" * MiB
        finally:
            client.close()
    finally:
        service.kill()
        service.wait()
