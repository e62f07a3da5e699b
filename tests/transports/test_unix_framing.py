"""unix:// ends against a raw socket peer: frames split anywhere, oversized and cut-off frames."""
from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time

import pytest

from multifrost.codec import Pieces
from multifrost.transports import open_child_end, open_parent_end

TIMEOUT = 20.0


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


@pytest.fixture
def child(tmp_path):
    end = open_child_end(f"unix://{tmp_path}/c.sock", bind=True, max_message_size=1000)
    yield end
    end.close()


def raw_peer(end) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(end.endpoint[len("unix://"):])
    return sock


def test_frames_split_at_every_byte_arrive_whole(child):
    sock = raw_peer(child)
    data = frame(b"") + frame(b"one") + frame(b"x" * 999)
    try:
        got = []
        for i in range(len(data)):
            sock.sendall(data[i:i + 1])
            while (item := child.recv_nowait()) is not None:  # read as it comes: a byte per
                got.append(item[1])  # skb fills the kernel buffer long before 1 KiB
        while len(got) < 3:
            got.append(child.recv_blocking(timeout=TIMEOUT)[1])
        assert got == [b"", b"one", b"x" * 999]
        peer = next(iter(child.peers))
        child.send_blocking(peer, b"reply", timeout=TIMEOUT)
        assert sock.recv(100) == frame(b"reply")
    finally:
        sock.close()


def test_large_frames_arrive_as_bytes_of_their_own(tmp_path):
    """A frame too big for the read buffer is received into bytes of its own (no copy): each
    arrives as exact bytes, split anywhere, and a later frame never writes into an earlier one."""
    end = open_child_end(f"unix://{tmp_path}/c.sock", bind=True, max_message_size=4 << 20)
    sock = raw_peer(end)
    sizes = [300_000, 3 << 20, 300_001]
    payloads = [bytes([n]) * size for n, size in enumerate(sizes, 1)]
    try:
        data = b"".join(frame(p) + frame(b"small") for p in payloads)

        def send() -> None:  # while the end reads: the frames are larger than the kernel's buffer
            rest = data
            for cut in (1, 5, 299_999, 1 << 20):  # cuts inside headers and inside bodies
                sock.sendall(rest[:cut])
                rest = rest[cut:]
            sock.sendall(rest)
        sender = threading.Thread(target=send)
        sender.start()
        got = [end.recv_blocking(timeout=TIMEOUT)[1] for _ in range(2 * len(payloads))]
        sender.join()
        assert all(type(item) is bytes for item in got)
        assert got == [item for p in payloads for item in (p, b"small")]
    finally:
        sock.close()
        end.close()


def test_an_oversized_frame_drops_that_connection_only(child, caplog):
    good, bad = raw_peer(child), raw_peer(child)
    try:
        good.sendall(frame(b"hello"))
        first, _ = child.recv_blocking(timeout=TIMEOUT)
        with caplog.at_level(logging.WARNING, logger="multifrost.transports"):
            bad.sendall(frame(b"B" * 1001))
            good.sendall(frame(b"still here"))
            assert child.recv_blocking(timeout=TIMEOUT) == (first, b"still here")
            with pytest.raises(TimeoutError):
                child.recv_blocking(timeout=0.2)
            assert bad.recv(10) == b""  # the child hung up on it
        lines = [r for r in caplog.records if "max_message_size" in r.getMessage()]
        assert len(lines) == 1
    finally:
        good.close()
        bad.close()


def test_a_peer_hanging_up_mid_frame_loses_only_that_frame(child, caplog):
    sock = raw_peer(child)
    with caplog.at_level(logging.WARNING, logger="multifrost.transports"):
        sock.sendall(frame(b"whole") + frame(b"cut off")[:6])
        peer, payload = child.recv_blocking(timeout=TIMEOUT)
        assert payload == b"whole" and peer in child.peers
        sock.close()
        with pytest.raises(TimeoutError):
            child.recv_blocking(timeout=0.3)
    assert peer not in child.peers
    assert any("middle of a frame" in r.getMessage() for r in caplog.records)


def test_a_connecting_parent_redials_after_an_oversized_reply(tmp_path):
    """The parent drops a connection that sends it too much, and redials the same listener."""
    path = str(tmp_path / "p.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    listener.settimeout(TIMEOUT)
    parent = open_parent_end(f"unix://{path}", bind=False, max_message_size=100)
    try:
        first, _ = listener.accept()
        first.settimeout(TIMEOUT)
        first.sendall(frame(b"z" * 101))
        with pytest.raises(TimeoutError):
            parent.recv_blocking(timeout=0.3)  # reads the frame, drops the connection, redials
        assert first.recv(10) == b""
        second, _ = listener.accept()
        second.settimeout(TIMEOUT)
        parent.send_blocking(b"again", timeout=TIMEOUT)
        assert second.recv(100) == frame(b"again")
        second.sendall(frame(b"fine"))
        assert parent.recv_blocking(timeout=TIMEOUT) == b"fine"
        first.close()
        second.close()
    finally:
        parent.close()
        listener.close()


def test_close_with_linger_lets_a_large_queued_frame_leave(tmp_path):
    """A frame bigger than the kernel buffer is still being written when its end closes with a
    linger: it arrives whole (a worker's last reply when it exits)."""
    child = open_child_end(f"unix://{tmp_path}/l.sock", bind=True)
    parent = open_parent_end(child.endpoint, bind=False)
    try:
        parent.send_blocking(b"hi", timeout=TIMEOUT)
        peer, _ = child.recv_blocking(timeout=TIMEOUT)
        big = bytes(range(256)) * (48 * 1024 * 4)  # 48 MiB: more than the socket buffers hold
        assert child.send_nowait(peer, big)
        closing = threading.Thread(target=child.close, kwargs={"linger": TIMEOUT})
        closing.start()
        assert parent.recv_blocking(timeout=TIMEOUT) == big
        closing.join(TIMEOUT)
        assert not closing.is_alive()
    finally:
        parent.close()
        child.close()


def test_pieces_sent_while_no_child_listens_arrive_whole_and_in_order(tmp_path):
    """A connecting parent keeps what it sends while its child is gone (Pieces too, as parts) and
    writes it, in order, once a new child binds the path; the large one goes through the writer."""
    url = f"unix://{tmp_path}/late.sock"
    child = open_child_end(url, bind=True)
    parent = open_parent_end(url, bind=False)
    try:
        parent.send_blocking(b"hello", timeout=TIMEOUT)
        assert child.recv_blocking(timeout=TIMEOUT)[1] == b"hello"
        child.close()
        deadline = time.monotonic() + TIMEOUT
        while parent.drops == 0:  # the parent notices the connection is gone
            assert time.monotonic() < deadline, "the parent never saw its connection drop"
            assert parent.recv_nowait() is None
            time.sleep(0.001)
        big = os.urandom(12 * 1024 * 1024)  # more than the socket buffers hold
        sent = [b"first", Pieces([b"<", big, b">"], len(big) + 2), b"between", Pieces([b"", big[:70000]], 70000)]
        for payload in sent:
            assert parent.send_nowait(payload)
        child = open_child_end(url, bind=True)
        got: list = []
        while len(got) < len(sent):
            assert time.monotonic() < deadline, f"{len(got)} of {len(sent)} arrived"
            parent.recv_nowait()  # a look at the parent end redials
            item = child.recv_nowait()
            if item is None:
                time.sleep(0.001)
            else:
                got.append(item[1])
        assert got == [bytes(payload) for payload in sent]
        assert all(type(payload) is bytes for payload in got)
    finally:
        parent.close()
        child.close()


def _pong_worker(tmp_path) -> str:
    script = tmp_path / "w.py"
    script.write_text("from multifrost import ChildWorker\n\n"
                      "class W(ChildWorker):\n    def ping(self):\n        return 'pong'\n\n"
                      "if __name__ == '__main__':\n    W().run()\n")
    return str(script)


def test_spawn_over_unix_uses_a_private_directory_and_removes_it(tmp_path):
    from multifrost import ParentWorker

    script = _pong_worker(tmp_path)
    with ParentWorker.spawn(script, transport="unix", heartbeat_interval=0, default_timeout=30) as worker:
        path = worker.endpoint[len("unix://"):]
        directory = os.path.dirname(path)
        assert worker.call.ping() == "pong"
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(directory)


def test_spawn_over_unix_is_refused_for_a_worker_that_is_not_python():
    from multifrost import ParentWorker

    with pytest.raises(ValueError, match="Python workers only"):
        ParentWorker.spawn("worker.js", executable="node", transport="unix")


def test_auto_the_default_spawns_this_pythons_workers_over_unix_and_other_programs_over_tcp(tmp_path):
    from multifrost import ParentWorker

    script = _pong_worker(tmp_path)
    with ParentWorker.spawn(script, heartbeat_interval=0, default_timeout=30) as worker:
        assert worker.endpoint.startswith("unix://")
        assert worker.call.ping() == "pong"
    assert ParentWorker.spawn(script, transport="auto")._target.transport == "unix"
    for chosen in ({}, {"transport": "auto"}):
        assert ParentWorker.spawn("worker.js", executable="node", **chosen)._target.transport == "tcp"
    with pytest.raises(ValueError, match="must be one of auto, tcp, ipc, unix"):
        ParentWorker.spawn(script, transport="udp")
