"""ZeroMQ ends against a raw pyzmq peer: wrong frame shapes are dropped, good ones still arrive."""
from __future__ import annotations

import logging

import pytest
import zmq

from multifrost.transports.zeromq import _shared_context

TIMEOUT = 20.0


@pytest.fixture(params=["tcp", "ipc", "inproc"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def raw():
    sockets = []

    def make(kind: int) -> zmq.Socket:
        sock = _shared_context().socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def test_child_drops_malformed_messages(ends, raw, caplog):
    child = ends.child(ends.address(), bind=True)
    dealer = raw(zmq.DEALER)
    dealer.connect(child.endpoint)
    with caplog.at_level(logging.WARNING, logger="multifrost.transports"):
        dealer.send_multipart([b"a", b"b", b"c"])  # router sees 4 frames
        dealer.send_multipart([b"not-empty", b"payload"])  # delimiter is not empty
        dealer.send_multipart([b"", b"good"])
        dealer.send_multipart([b"bare"])  # [identity, payload] is accepted
        peer, payload = child.recv_blocking(timeout=TIMEOUT)
        assert payload == b"good"
        assert child.recv_blocking(timeout=TIMEOUT) == (peer, b"bare")
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2
    child.send_blocking(peer, b"reply", timeout=TIMEOUT)
    assert dealer.recv_multipart() == [b"", b"reply"]


def test_parent_drops_malformed_messages(ends, raw, caplog):
    parent = ends.parent(ends.address(), bind=True)
    router = raw(zmq.ROUTER)
    router.connect(parent.endpoint)
    parent.send_blocking(b"hello", timeout=TIMEOUT)
    identity, empty, payload = router.recv_multipart()
    assert (empty, payload) == (b"", b"hello")
    with caplog.at_level(logging.WARNING, logger="multifrost.transports"):
        router.send_multipart([identity, b"x", b"y"])  # first frame not empty
        router.send_multipart([identity, b"", b"x", b"y"])  # three frames
        router.send_multipart([identity, b"", b"good"])
        router.send_multipart([identity, b"bare"])  # [payload] is accepted
        assert parent.recv_blocking(timeout=TIMEOUT) == b"good"
        assert parent.recv_blocking(timeout=TIMEOUT) == b"bare"
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2
