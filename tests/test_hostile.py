"""Hostile peers: a child fed garbage over a real socket, and a parent answered with garbage.

Neither side may stop serving: each bad message is dropped (the child logs one line for it)
and the next valid call is answered.
"""
import os
import socket
import subprocess
import sys
import time

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import CLIENTS
from multifrost import ParentWorker, protocol
from multifrost.codec import pack_message, unpack_message

HERE = os.path.dirname(os.path.abspath(__file__))
MATH_WORKER = os.path.join(HERE, "workers", "math_worker.py")
MATH_SERVICE = os.path.join(HERE, "workers", "math_service.py")
GARBAGE_ROUTER = os.path.join(HERE, "workers", "garbage_router.py")
APP = protocol.APP_ID


class RawParent:
    """A bare pyzmq DEALER and a real Python child: spawned (the DEALER binds, the child
    connects), or a connect-mode service (the child binds, the DEALER connects)."""

    def __init__(self, service_registry=None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if service_registry is None:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
            argv, env = [sys.executable, MATH_WORKER], {**os.environ, "COMLINK_ZMQ_PORT": str(port)}
        else:
            argv, env = [sys.executable, MATH_SERVICE, "hostile"], {**os.environ, "MULTIFROST_REGISTRY": service_registry}
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if service_registry is not None:
            from multifrost.registry import FileRegistry
            self.sock.connect(f"tcp://127.0.0.1:{FileRegistry(service_registry).discover('hostile', timeout=30).port}")
        self.stderr_lines: list[str] = []  # what the child logged (it arrives as STDERR messages)

    def send(self, frames: list[bytes]) -> None:
        assert self.sock.poll(10_000, zmq.POLLOUT), "the child is not reading"
        self.sock.send_multipart(frames)

    def call(self, function: str, args: list, timeout: float = 10.0):
        """Send a CALL and return the reply to it, skipping every other message on the way."""
        message = protocol.call(function, args)
        self.send([b"", pack_message(message)])
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and self.sock.poll(int(remaining * 1000)), f"no reply to {function}{tuple(args)}"
            reply = unpack_message(self.sock.recv_multipart()[-1])
            if reply["type"] == "stderr":
                self.stderr_lines.extend(reply["output"].splitlines())
            elif reply.get("id") == message["id"]:
                return reply

    def close(self) -> None:
        try:
            self.send([b"", pack_message(protocol.shutdown())])
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, AssertionError):
            self.proc.kill()
            self.proc.wait()
        finally:
            self.proc.stderr.close()
            self.sock.close(0)
            self.ctx.term()


class RawUnixParent(RawParent):
    """A bare listening Unix socket speaking unix:// frames (a 4-byte length, the payload) and a
    spawned Python child connected to it; ZeroMQ frames given to ``send`` are joined into one payload."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "raw.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.listener.settimeout(30)
        env = {**os.environ, "MULTIFROST_ENDPOINT": f"unix://{self.path}"}
        env.pop("COMLINK_ZMQ_PORT", None)
        self.proc = subprocess.Popen([sys.executable, MATH_WORKER], env=env, stdin=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.stderr_lines = []
        self.accept()

    def accept(self) -> None:
        """Take the child's (next) connection."""
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)
        self.pending = b""

    def send(self, frames: list[bytes]) -> None:
        self.send_raw(_frame(b"".join(frames)))

    def send_raw(self, data: bytes) -> None:
        self.conn.sendall(data)

    def call(self, function: str, args: list, timeout: float = 10.0):
        message = protocol.call(function, args)
        self.send([pack_message(message)])
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no reply to {function}{tuple(args)}"
            reply = unpack_message(self._next_payload())
            if reply["type"] == "stderr":
                self.stderr_lines.extend(reply["output"].splitlines())
            elif reply.get("id") == message["id"]:
                return reply

    def _next_payload(self) -> bytes:
        while len(self.pending) < 4 or len(self.pending) < 4 + int.from_bytes(self.pending[:4], "big"):
            chunk = self.conn.recv(65536)
            assert chunk, "the child hung up"
            self.pending += chunk
        size = int.from_bytes(self.pending[:4], "big")
        payload, self.pending = self.pending[4:4 + size], self.pending[4 + size:]
        return payload

    def close(self) -> None:
        try:
            self.send([pack_message(protocol.shutdown())])
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()
        finally:
            self.proc.stderr.close()
            self.conn.close()
            self.listener.close()


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _serving(parent: RawParent):
    try:
        assert parent.call("add", [1, 2], timeout=30)["result"] == 3  # connected and serving
        yield parent
    finally:
        parent.close()


@pytest.fixture(params=["tcp", "unix"])
def raw_parent(request, tmp_path):
    """A spawned child and the raw DEALER (tcp) or raw Unix socket (unix://) it connected to."""
    yield from _serving(RawParent() if request.param == "tcp" else RawUnixParent(str(tmp_path)))


@pytest.fixture
def raw_client(tmp_path):
    """A connect-mode service and a raw DEALER connected to it."""
    yield from _serving(RawParent(str(tmp_path / "services.json")))


def _map(**fields) -> bytes:
    return msgpack.packb(fields)


VALID_CALL = pack_message(protocol.call("add", [1, 2]))

#: (what, frames after the identity the DEALER adds): each must be dropped with one log line.
DROPPED = [
    ("garbage bytes", [b"", b"\xc1\xff\x00garbage"]),
    ("garbage without the empty delimiter", [b"\x93\x01\x02"]),
    ("empty frame", [b""]),
    ("empty payload after the delimiter", [b"", b""]),
    ("three frames", [b"", VALID_CALL, b"extra"]),
    ("four frames", [b"a", b"b", b"c", b"d"]),
    ("not a map", [b"", msgpack.packb([APP, "call", "add"])]),
    ("a bare string", [b"", msgpack.packb("call")]),
    ("wrong app id", [b"", _map(app="comlink_ipc_v3", id="x", type="call", function="add", args=[1, 2])]),
    ("no app id", [b"", _map(id="x", type="call", function="add", args=[1, 2])]),
    ("unknown type", [b"", _map(app=APP, id="x", type="telepathy")]),
    ("type is not a string", [b"", _map(app=APP, id="x", type=7)]),
    ("id is not a string", [b"", _map(app=APP, id=12, type="call", function="add", args=[1, 2])]),
    ("nesting past the limit", [b"", b"\x81\xa1a" + b"\x91" * 600 + b"\xc0"]),
    ("a str claiming 4 GiB", [b"", b"\x81\xa1a\xdb\xff\xff\xff\xff" + b"x" * 16]),
    ("an array claiming 4 billion items", [b"", b"\x81\xa1a\xdd\xff\xff\xff\xff\x01"]),
    ("truncated", [b"", VALID_CALL[:-3]]),
    ("trailing bytes", [b"", VALID_CALL + b"\x00"]),
    ("invalid UTF-8", [b"", b"\x81\xa1a\xa2\xff\xfe"]),
    ("a reserved ext type", [b"", b"\x81\xa1a\xd4\x05\x00"]),
    ("a heartbeat that cannot be echoed", [b"", _map(app=APP, id="hb", type="heartbeat",
                                                      metadata={"hb_timestamp": 1.0, "n": 2**64 - 1})]),
]


def test_each_hostile_message_is_dropped_with_one_log_line(raw_parent):
    for i, (what, frames) in enumerate(DROPPED):
        raw_parent.send(frames)
        reply = raw_parent.call("add", [i, 1])
        assert reply["type"] == "response" and reply["result"] == i + 1, what
    dropped = [line for line in raw_parent.stderr_lines if "dropped" in line]
    assert len(dropped) == len(DROPPED), "\n".join(raw_parent.stderr_lines)


@pytest.mark.parametrize("message, error", [
    ({"function": "add", "args": [1, 2]}, "Message missing 'id' field"),
    ({"id": "c1", "args": [1, 2]}, "Message missing 'function' field"),
    ({"id": "c2", "function": "add", "args": {"a": 1}}, "Message 'args' must be an array"),
    ({"id": "c3", "function": ["add"], "args": []}, "Function ['add'] not found"),
    ({"id": "c4", "function": "add", "args": [1, "x"]}, "TypeError"),
])
def test_malformed_calls_are_answered_with_an_error(raw_parent, message, error):
    if isinstance(raw_parent, RawUnixParent):
        raw_parent.send([_map(app=APP, type="call", timestamp=0.0, **message)])
        reply = None
        while reply is None or reply["type"] != "error":
            reply = unpack_message(raw_parent._next_payload())
        assert reply["error"].startswith(error) and reply["id"] == message.get("id")
        assert raw_parent.call("add", [2, 2])["result"] == 4
        return
    raw_parent.send([b"", _map(app=APP, type="call", timestamp=0.0, **message)])
    while True:  # the error answers the malformed call; find it among what arrives
        reply = unpack_message(raw_parent.sock.recv_multipart()[-1]) if raw_parent.sock.poll(10_000) else None
        assert reply is not None, "the malformed call was not answered"
        if reply["type"] == "error":
            break
    assert reply["error"].startswith(error) and reply["id"] == message.get("id")
    assert raw_parent.call("add", [2, 2])["result"] == 4


def test_a_frame_past_the_size_limit_costs_only_that_connection(raw_client):
    """A client of a service sends a frame over ZeroMQ's 65 MiB max message size: ZeroMQ drops that
    connection (what was in flight on it is lost), the client reconnects and is served again."""
    raw_client.send([b"", b"\x00" * (66 * 1024 * 1024)])
    deadline = time.monotonic() + 30
    while True:
        try:
            assert raw_client.call("add", [20, 22], timeout=1.0)["result"] == 42
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the service never answered again"
    assert raw_client.proc.poll() is None


@pytest.mark.parametrize("what, data", [
    ("a length past max_message_size", (66 * 1024 * 1024).to_bytes(4, "big") + b"\x00" * 64),
    ("a length of 4 GiB", b"\xff\xff\xff\xff"),
])
def test_a_unix_frame_past_the_size_limit_costs_only_that_connection(tmp_path, what, data):
    """The child drops a connection that announces too large a frame (one log line) and dials
    its parent again; the new connection is served."""
    parent = RawUnixParent(str(tmp_path))
    try:
        assert parent.call("add", [1, 2], timeout=30)["result"] == 3
        parent.send_raw(data)
        parent.conn.settimeout(30)
        while parent.conn.recv(65536):  # whatever was in flight, then the hang-up
            pass
        parent.conn.close()
        parent.accept()
        assert parent.call("add", [20, 22], timeout=30)["result"] == 42, what
        assert parent.proc.poll() is None
    finally:
        parent.close()


# -- hypothesis: generated hostile frames -------------------------------------------------

SAFE_FUNCTIONS = ["add", "echo", "echo_all", "fail", "nope", "_secret", "limit", "pid", "list_functions", "run"]
ints = st.integers(-2**63, 2**64 - 1)  # what msgpack can carry
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), st.text(max_size=8), st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=8)
envelopes = st.fixed_dictionaries({}, optional={
    "app": st.sampled_from([APP, APP, APP, "comlink_ipc_v3", "", 4]),
    "type": st.sampled_from(["call", "call", "heartbeat", "response", "error", "stdout", "stderr", "nope", 1]),
    "id": st.one_of(st.text(max_size=12), ints, st.none()),
    "timestamp": st.one_of(st.floats(), st.text(max_size=3)),
    "function": st.one_of(st.sampled_from(SAFE_FUNCTIONS), ints, st.lists(st.text(max_size=3), max_size=2)),
    "args": st.one_of(st.lists(values, max_size=3), values),
    "namespace": st.sampled_from(["default", "default", "other", 3]),
    "metadata": st.one_of(st.dictionaries(st.text(max_size=12), values, max_size=3), values),
    "output": values,
})


@st.composite
def mutated(draw):
    """A valid CALL with bytes flipped, cut or appended."""
    data = bytearray(VALID_CALL)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data) + 4))
    return bytes(data[:cut]) + (b"\x00" * (cut - len(data)) if cut > len(data) else b"")


payloads = st.one_of(
    st.binary(max_size=64),
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    envelopes.map(lambda m: msgpack.packb(m, use_bin_type=True)),
    mutated(),
)
hostile_messages = st.one_of(
    payloads.map(lambda p: [b"", p]),
    payloads.map(lambda p: [p]),
    st.lists(st.binary(max_size=16), min_size=1, max_size=4),
    st.tuples(payloads, payloads).map(lambda ps: [b"", *ps]),
)


def test_fuzzed_frames_never_stop_the_child(raw_parent):
    token = iter(range(10**9))

    @settings(max_examples=250, deadline=None, database=None)
    @given(st.lists(hostile_messages, min_size=1, max_size=4))
    def check(messages):
        for frames in messages:
            raw_parent.send(frames)
        n = next(token)
        reply = raw_parent.call("echo", [n])
        assert reply["type"] == "response" and reply["result"] == n

    check()
    assert raw_parent.proc.poll() is None


@pytest.mark.parametrize("api", ["sync", "async"])
def test_garbage_before_each_reply_never_confuses_the_parent(api):
    client = CLIENTS[api](ParentWorker.spawn(GARBAGE_ROUTER, transport="tcp", default_timeout=10.0, heartbeat_interval=0.05,
                                             on_output=lambda stream, text: None))
    client.start()
    token = iter(range(10**9))
    try:
        @settings(max_examples=150 if api == "sync" else 75, deadline=None, database=None)
        @given(st.lists(hostile_messages, max_size=4))
        def check(garbage):
            n = next(token)
            assert client.call("bounce", garbage, n) == n

        check()
        assert client.worker.is_healthy and client.worker.last_heartbeat_rtt_ms is not None
    finally:
        client.close()
