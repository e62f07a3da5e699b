"""The Node.js interop peer, exercised from Python with plain pyzmq + msgpack.

Checks that peer.js speaks PROTOCOL.md the way the JavaScript implementation does (child, connect
mode and parent roles), so later tests can trust it as a stand-in for the JavaScript side.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgpack
import pytest
import zmq

APP = "comlink_ipc_v4"
MIB = 1024 * 1024
REPLY_TIMEOUT = 15.0  # liveness bound for one reply on a loaded machine
UTC = dt.timezone.utc
HERE = Path(__file__).resolve().parent


def wait_until(condition, timeout: float, interval: float = 0.02) -> bool:
    """Poll condition() until it is true or timeout seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


def pid_running(pid: int) -> bool:
    """True while process pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def envelope(msg_type: str, **fields) -> dict:
    return {"app": APP, "id": str(uuid.uuid4()), "type": msg_type, "timestamp": time.time(), **fields}


class RawParent:
    """A bare DEALER speaking the wire protocol by hand (the multifrost package is not used)."""

    def __init__(self, ctx: zmq.Context, *, connect_port: int | None = None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if connect_port is None:
            self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        else:
            self.port = connect_port
            self.sock.connect(f"tcp://127.0.0.1:{connect_port}")
        self.unmatched: list[dict] = []

    def send(self, message: dict) -> str:
        self.send_raw(msgpack.packb(message, use_bin_type=True, datetime=True))
        return message.get("id")

    def send_raw(self, payload: bytes) -> None:
        self.sock.send_multipart([b"", payload])

    def call(self, function: str, *args, namespace: str = "default", **extra) -> str:
        return self.send(envelope("call", function=function, args=list(args), namespace=namespace, **extra))

    def recv(self, timeout: float) -> dict | None:
        if not self.sock.poll(timeout * 1000):
            return None
        frames = self.sock.recv_multipart()
        assert frames[0] == b"" and len(frames) == 2, frames[:1]
        return msgpack.unpackb(frames[1], raw=False, timestamp=3, strict_map_key=False)

    def wait_for(self, msg_id: str, timeout: float = REPLY_TIMEOUT) -> dict:
        """The next message carrying msg_id; other messages are kept in self.unmatched."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is None:
                break
            if message.get("id") == msg_id:
                return message
            self.unmatched.append(message)
        raise AssertionError(f"no reply to {msg_id} within {timeout} s")

    def request(self, function: str, *args, **kw) -> dict:
        return self.wait_for(self.call(function, *args, **kw))

    def result(self, function: str, *args, **kw):
        reply = self.request(function, *args, **kw)
        assert reply["type"] == "response", reply
        return reply["result"]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _start(node_peer, zctx, log: Path, *extra, env=None):
    parent = RawParent(zctx)
    proc = node_peer.start_child(parent.port, *extra, env=env, stderr=log.open("wb"))
    return parent, proc


def _stop(parent: RawParent, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        parent.send(envelope("shutdown"))
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    parent.close()


@pytest.fixture(scope="module")
def child(node_peer, zctx, tmp_path_factory):
    """One spawn-mode Node child (started with --worker, which it must ignore) shared by value tests."""
    parent, proc = _start(node_peer, zctx, tmp_path_factory.mktemp("child") / "stderr.log", "--worker")
    yield parent
    _stop(parent, proc)


@pytest.fixture
def own_child(node_peer, zctx, tmp_path):
    """A fresh child per test, for tests that end it; yields (parent, process)."""
    started = []

    def start(*extra, env=None):
        started.append(_start(node_peer, zctx, tmp_path / f"stderr{len(started)}.log", *extra, env=env))
        return started[-1]

    yield start
    for parent, proc in started:
        _stop(parent, proc)


# ---- values, Python -> Node -> Python -------------------------------------------------------------

# (value, type it comes back as). msgpackr packs an integral JS number as an int only in 32-bit
# range; a bigger one (up to 2^53) leaves as float64. Beyond 2^53 it decoded as BigInt and goes
# back as int64.
INT_EDGES = [
    (0, int), (1, int), (-1, int), (2**31 - 1, int), (-(2**31), int), (2**31, int), (2**32 - 1, int),
    (2**32, float), (2**53 - 1, float), (-(2**53 - 1), float),
    (2**53 + 1, int), (-(2**53 + 1), int), (2**63 - 1, int), (-(2**63), int),
]


@pytest.mark.parametrize(("value", "comes_back_as"), INT_EDGES, ids=[str(v) for v, _ in INT_EDGES])
def test_int_edges_round_trip(child, value, comes_back_as):
    result = child.result("echo", value)
    assert result == value and type(result) is comes_back_as


@pytest.mark.parametrize(("value", "js_type"), [
    (2**53 - 1, "number"), (2**53 + 1, "bigint"), (-(2**63), "bigint"), (1.5, "number"), (True, "boolean"),
    (None, "null"), ("s", "string"), (b"\x00", "Buffer"), ({}, "object"), ([], "array"),
    (dt.datetime(2024, 1, 2, tzinfo=UTC), "Date"), (float("nan"), "null"), (float("inf"), "null"),
])
def test_type_node_receives(child, value, js_type):
    assert child.result("type_of", value) == js_type


def test_add(child):
    assert child.result("add", 2, 3) == 5
    assert child.result("add", "a", "b") == "ab"


def test_floats(child):
    assert child.result("echo", 1e308) == 1e308
    assert child.result("echo", 0.1) == 0.1
    assert child.result("echo", 5e-324) == 5e-324
    # An integral float is an integer to JavaScript: it comes back packed as an int.
    zero = child.result("echo", -0.0)
    assert zero == 0 and type(zero) is int
    two = child.result("echo", 2.0)
    assert two == 2 and type(two) is int


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_arrive_as_null(child, value):
    assert child.result("echo", value) is None
    assert child.result("echo", [value, 1]) == [None, 1]


@pytest.mark.parametrize("text", ["héllo wörld", "😀🎉👩‍👩‍👧", "中文字符 日本語", "nul\x00inside", ""])
def test_unicode(child, text):
    assert child.result("echo", text) == text
    assert child.result("echo", {text or "k": [text]}) == {text or "k": [text]}


def test_bytes_travel_as_bin_never_str(child):
    for value in (b"", b"\x00\xff" * 100, bytes(range(256))):
        result = child.result("echo", value)
        assert type(result) is bytes and result == value
    assert child.result("echo", bytearray(b"ab")) == b"ab"
    assert child.result("big", 1000) == b"x" * 1000


def test_deep_nesting(child):
    nested_list: object = "leaf"
    nested_map: object = 1
    for _ in range(50):
        nested_list = [nested_list]
        nested_map = {"k": nested_map}
    assert child.result("echo", nested_list) == nested_list
    assert child.result("echo", nested_map) == nested_map


def test_empty_and_missing_args(child):
    assert child.result("echo_all") == []
    assert child.result("type_of") == "undefined"
    reply = child.wait_for(child.send({k: v for k, v in envelope("call", function="echo_all").items()}))
    assert reply["type"] == "response" and reply["result"] == []


def test_all_args_arrive_in_order(child):
    assert child.result("echo_all", 1, "two", [3], {"four": 4}, None) == [1, "two", [3], {"four": 4}, None]


def test_16_mib_payload_both_ways(child):
    blob = bytes(range(256)) * (16 * MIB // 256)
    result = child.result("echo", blob)
    assert len(result) == len(blob) and hashlib.sha256(result).digest() == hashlib.sha256(blob).digest()
    assert child.result("big", 16 * MIB) == b"x" * (16 * MIB)


@pytest.mark.parametrize("moment", [
    dt.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC),
    dt.datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
    dt.datetime(2262, 1, 1, tzinfo=UTC),
])
def test_datetime_round_trips_as_date(child, moment):
    assert child.result("echo", moment) == moment  # JavaScript Dates keep milliseconds only


def test_date_from_node_is_a_timestamp(child):
    now = child.result("date_now")
    assert isinstance(now, dt.datetime) and now.tzinfo is not None
    assert abs((now - dt.datetime.now(UTC)).total_seconds()) < 3600


def test_response_always_carries_result(child):
    reply = child.request("echo", None)
    assert "result" in reply and reply["result"] is None


def test_undefined_is_ext_0(child):
    # What a JavaScript child sends for `undefined` (msgpackr: d4 00 00, i.e. fixext 1 of type 0
    # with ONE zero data byte, not empty data); a receiver reads it as null.
    assert child.result("nothing") == msgpack.ExtType(0, b"\x00")


def test_map_keys(child):
    assert child.result("int_keys") == {1: "one", 2: "two"}  # JavaScript may send integer keys
    assert child.result("echo", {1: "a", "b": 2}) == {"1": "a", "b": 2}  # a JS object's keys are strings


# ---- errors ---------------------------------------------------------------------------------------

def error_text(parent: RawParent, function: str, *args) -> str:
    reply = parent.request(function, *args)
    assert reply["type"] == "error", reply
    return reply["error"]


def test_error_is_message_only(child):
    assert error_text(child, "fail", "boom: something broke") == "boom: something broke"


@pytest.mark.parametrize(("function", "text"), [
    ("_secret", "Cannot call private method '_secret'"),
    ("__proto__", "Cannot call private method '__proto__'"),
    ("no_such_function", "Function 'no_such_function' not found"),
    ("constructor", "Function 'constructor' not found"),
    ("toString", "Function 'toString' not found"),
    ("version", "'version' is not callable"),
])
def test_call_refused(child, function, text):
    assert error_text(child, function) == text


def test_missing_function_field(child):
    reply = child.wait_for(child.send(envelope("call", args=[])))
    assert reply["type"] == "error" and reply["error"] == "Message missing 'function' field"


def test_missing_id_field(child):
    message = envelope("call", function="add", args=[1, 2])
    del message["id"]
    child.send(message)
    reply = child.recv(REPLY_TIMEOUT)
    assert reply["type"] == "error" and reply["error"] == "Message missing 'id' field"


def test_unencodable_result_is_an_error(child):
    assert error_text(child, "unencodable").startswith("Result cannot be encoded")


def test_child_survives_garbage(child):
    junk = [b"\xc1", b"not msgpack at all", msgpack.packb([1, 2]), msgpack.packb("str"),
            msgpack.packb({"app": "other_app", "id": "x", "type": "call", "function": "add", "args": [1, 2]}),
            msgpack.packb({"app": APP, "type": "never_heard_of_it", "id": str(uuid.uuid4())})]
    for payload in junk:
        child.send_raw(payload)
    extra = envelope("call", function="add", args=[1, 1], namespace="default",
                     metadata={"trace": "t"}, unknown_field=[1, 2, 3])
    reply = child.wait_for(child.send(extra))
    assert reply["result"] == 2
    assert child.unmatched == []  # nothing answered the junk


# ---- namespaces -----------------------------------------------------------------------------------

def test_other_namespace_gets_no_reply(child):
    ignored = child.call("add", 1, 2, namespace="other")
    assert child.result("add", 2, 2) == 4  # handled after the ignored one
    assert child.unmatched == []
    assert child.recv(0.3) is None, f"late reply to {ignored}"  # and nothing straggles in afterwards


def test_namespace_from_environment(own_child):
    parent, _ = own_child(env={"MULTIFROST_NAMESPACE": "math"})
    assert parent.result("add", 1, 2, namespace="math") == 3
    parent.call("add", 1, 2)  # default namespace: ignored
    assert parent.recv(0.3) is None


# ---- heartbeat, output, concurrency ---------------------------------------------------------------

def test_heartbeat_echo(child):
    hb = envelope("heartbeat", metadata={"hb_timestamp": time.time()})
    echo = child.wait_for(child.send(hb))
    assert echo["type"] == "heartbeat" and echo["app"] == APP
    assert echo["metadata"]["hb_timestamp"] == hb["metadata"]["hb_timestamp"]
    assert echo["metadata"]["hb_response"] is True


def test_heartbeat_not_queued_behind_a_running_method(child):
    slow = child.call("slow", 1500)
    hb = child.send(envelope("heartbeat", metadata={"hb_timestamp": time.time()}))
    first = child.recv(REPLY_TIMEOUT)
    assert first is not None and first["id"] == hb
    assert child.wait_for(slow)["result"] == 1500


def test_output_is_framed_and_arrives_before_the_response(child):
    call_id = child.call("print", "to stdout")
    first = child.recv(REPLY_TIMEOUT)
    assert first["type"] == "stdout" and first["output"] == "to stdout" and first["app"] == APP
    assert child.wait_for(call_id)["result"] is None
    call_id = child.call("print", "to stderr", "stderr")
    assert child.recv(REPLY_TIMEOUT)["type"] == "stderr"
    child.wait_for(call_id)


def test_500_concurrent_calls(child):
    ids = {child.call("add", i, i): 2 * i for i in range(500)}
    replies = {}
    while len(replies) < len(ids):
        message = child.recv(REPLY_TIMEOUT)
        assert message is not None, f"only {len(replies)} of 500 replies arrived"
        assert message["id"] in ids and message["id"] not in replies
        replies[message["id"]] = message["result"]
    assert replies == ids


def test_concurrent_slow_calls_answer_out_of_order(child):
    slow = child.call("slow", 800)
    fast = child.call("slow", 1)
    assert child.recv(REPLY_TIMEOUT)["id"] == fast
    assert child.wait_for(slow)["result"] == 800


# ---- process lifecycle ----------------------------------------------------------------------------

def test_crash_exits_the_process(own_child):
    parent, proc = own_child()
    parent.call("crash")
    assert proc.wait(REPLY_TIMEOUT) == 3
    assert parent.recv(0.2) is None  # no reply to a crashed call


def test_shutdown_exits_cleanly(own_child):
    parent, proc = own_child()
    assert parent.result("add", 1, 1) == 2
    parent.send(envelope("shutdown"))
    assert proc.wait(REPLY_TIMEOUT) == 0


@pytest.mark.parametrize("port", ["abc", "80", "1023", "65536", "", "12.5", None])
def test_bad_port_is_fatal(node_peer, port):
    env = {k: v for k, v in os.environ.items() if k != "COMLINK_ZMQ_PORT"}
    if port is not None:
        env["COMLINK_ZMQ_PORT"] = port
    proc = subprocess.run(node_peer.child_command(), env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert any(line.startswith("FATAL:") for line in proc.stderr.splitlines()), proc.stderr


def test_child_exits_when_its_parent_is_gone(node_peer, zctx):
    parent = RawParent(zctx)
    launcher = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen({node_peer.child_command()!r}, env={{**os.environ, 'COMLINK_ZMQ_PORT': '{parent.port}'}})\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    middle = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    try:
        node_pid = int(middle.stdout.readline())
        assert parent.result("pid") == node_pid
        middle.send_signal(signal.SIGKILL)
        middle.wait()
        assert wait_until(lambda: not pid_running(node_pid), REPLY_TIMEOUT), "orphaned child kept running"
    finally:
        if pid_running(node_pid):
            os.kill(node_pid, signal.SIGKILL)
        parent.close()


# ---- connect mode (registry) ----------------------------------------------------------------------

def read_ready(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    assert line, f"service exited ({proc.wait()}) before it was ready"
    return json.loads(line)


@pytest.fixture
def registry(tmp_path):
    return tmp_path / "multifrost" / "services.json"


@pytest.fixture
def service(node_peer, registry, tmp_path):
    started = []

    def start(service_id="interop-svc", **kw):
        proc = node_peer.start_service(service_id, registry, stderr=(tmp_path / f"svc{len(started)}.log").open("wb"), **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_service_registers_serves_several_parents_and_unregisters(service, registry, zctx):
    proc = service()
    ready = read_ready(proc)
    entry = json.loads(registry.read_text())["interop-svc"]
    assert entry["port"] == ready["port"] and entry["pid"] == proc.pid
    assert dt.datetime.fromisoformat(entry["started"].replace("Z", "+00:00")).tzinfo is not None
    first, second = RawParent(zctx, connect_port=ready["port"]), RawParent(zctx, connect_port=ready["port"])
    try:
        a, b = first.call("add", 1, 1), second.call("add", 2, 2)
        assert second.wait_for(b)["result"] == 4 and first.wait_for(a)["result"] == 2
        assert first.unmatched == [] and second.unmatched == []
    finally:
        first.close()
        second.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(REPLY_TIMEOUT) == 0
    assert "interop-svc" not in json.loads(registry.read_text())
    assert not (registry.parent / "services.lock").exists() and not (registry.parent / "services.json.lock").exists()


def test_service_removes_stale_locks_of_both_kinds(service, registry):
    registry.parent.mkdir(parents=True)
    (registry.parent / "services.lock").write_text("")
    (registry.parent / "services.json.lock").mkdir()
    old = time.time() - 60
    for lock in ("services.lock", "services.json.lock"):
        os.utime(registry.parent / lock, (old, old))
    proc = service()
    assert read_ready(proc)["ready"] is True
    assert json.loads(registry.read_text())["interop-svc"]["pid"] == proc.pid
    assert not (registry.parent / "services.lock").exists() and not (registry.parent / "services.json.lock").exists()


@pytest.mark.parametrize("lock", ["services.lock", "services.json.lock"])
def test_service_waits_for_a_held_lock(service, registry, lock):
    registry.parent.mkdir(parents=True)
    held = registry.parent / lock
    held.mkdir() if lock.endswith(".json.lock") else held.write_text("")
    proc = service()
    assert not wait_until(registry.exists, 0.5), "registered while another writer held the lock"
    held.rmdir() if held.is_dir() else held.unlink()
    assert read_ready(proc)["ready"] is True


def test_service_id_held_by_live_pid_is_refused(service, registry):
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"interop-svc": {"port": 1, "pid": os.getpid(), "started": "2024-01-01T00:00:00Z"}}))
    proc = service()
    assert proc.wait(REPLY_TIMEOUT) != 0
    assert json.loads(registry.read_text())["interop-svc"]["pid"] == os.getpid()


def test_service_id_of_dead_pid_is_taken_over(service, registry):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"interop-svc": {"port": 1, "pid": dead.pid, "started": "2024-01-01T00:00:00Z"},
                                    "other": {"port": 2, "pid": dead.pid, "started": "2024-01-01T00:00:00Z"}}))
    proc = service()
    ready = read_ready(proc)
    services = json.loads(registry.read_text())
    assert services["interop-svc"] == {**services["interop-svc"], "port": ready["port"], "pid": proc.pid}
    assert services["other"]["port"] == 2  # other entries are kept


# ---- the Node parent role -------------------------------------------------------------------------

def tag_bytes(data: bytes) -> dict:
    return {"$t": "bytes", "b64": base64.b64encode(data).decode()}


def test_node_parent_against_raw_python_child(node_peer):
    steps = [
        {"call": "add", "args": [40, 2]},
        {"call": "echo", "args": [{"$t": "bigint", "v": str(2**63 - 1)}]},
        {"call": "echo", "args": [tag_bytes(b"\x00\xffbin")]},
        {"call": "echo", "args": [{"$t": "date", "ms": 1700000000123}]},
        {"call": "echo", "args": [{"text": "é😀中", "list": [1, 2.5, None, True]}]},
        {"call": "echo", "args": [{"$t": "float", "v": "NaN"}]},
        {"call": "fail", "args": ["x"]},
        {"call": "nope", "args": []},
        {"call": "client_name", "args": []},
        {"call": "spawn_info", "args": []},
        {"call": "say", "args": ["hello"]},
        {"heartbeat": 3, "timeout_ms": 5000},
        {"call": "add", "args": [1, 2], "namespace": "other", "timeout_ms": 300},
        {"call": "add", "args": ["$i", 1000], "count": 500, "timeout_ms": 20000},
    ]
    run = node_peer.run_parent({"spawn": {"executable": sys.executable, "script": str(HERE / "raw_child.py")}, "steps": steps})
    assert run.returncode == 0, run.stderr
    assert run.of("started")[0]["mode"] == "spawn"
    ok = [run.result(i)["result"] for i in range(6)]
    assert ok == [42, {"$t": "bigint", "v": str(2**63 - 1)}, tag_bytes(b"\x00\xffbin"), {"$t": "date", "ms": 1700000000123},
                  {"text": "é😀中", "list": [1, 2.5, None, True]}, None]
    assert run.result(6)["error"].startswith("ZeroDivisionError: division by zero\n")
    assert run.result(7)["error"] == "Function 'nope' not found"
    assert run.result(8)["result"] == "node-interop-peer"  # sent as `clientName`
    assert run.result(9)["result"] == {"argv": [], "worker_mode": "1"}  # no --worker, through sh -c
    assert run.of("output") == [{"event": "output", "stream": "stdout", "output": "hello"},
                                {"event": "output", "stream": "stderr", "output": "HELLO"}]
    beats = run.of("heartbeat")
    assert len(beats) == 3 and all(b["ok"] and b["hb_timestamp_matches"] and b["hb_response"] is True for b in beats)
    assert all(0 <= b["rtt_ms"] < REPLY_TIMEOUT * 1000 for b in beats)
    assert run.result(12)["kind"] == "timeout"
    assert sorted(run.result(13, i)["result"] for i in range(500)) == list(range(1000, 1500))
    assert run.of("done")[0]["child_exit"] == {"code": 0, "signal": None}  # shut down by message


def test_node_parent_sees_child_crash(node_peer):
    steps = [{"call": "crash", "args": [], "timeout_ms": 20000}, {"wait_exit": True, "timeout_ms": 20000}]
    run = node_peer.run_parent({"spawn": {"executable": node_peer.node, "script": str(HERE / "peer.js")},
                                "steps": steps})
    assert run.result(0)["kind"] == "child_exited"
    assert run.of("child_exit") == [{"event": "child_exit", "code": 3, "signal": None}]


def test_node_parent_connects_by_service_id(node_peer, service, registry):
    proc = service("node-to-node")
    read_ready(proc)
    scenario = {"connect": {"service_id": "node-to-node"}, "steps": [
        {"call": "add", "args": [20, 22]},
        {"call": "echo", "args": [{"$t": "bigint", "v": str(-(2**63))}]},
        {"heartbeat": 1},
        {"call": "print", "args": ["over connect"]},
    ]}
    run = node_peer.run_parent(scenario, env={"MULTIFROST_REGISTRY": str(registry)})
    assert run.returncode == 0, run.stderr
    assert run.result(0)["result"] == 42
    assert run.result(1)["result"] == {"$t": "bigint", "v": str(-(2**63))}
    assert run.of("heartbeat")[0]["ok"] is True
    assert run.of("output") == [{"event": "output", "stream": "stdout", "output": "over connect"}]
    assert proc.poll() is None  # connect mode does not shut the service down


def test_node_parent_reports_unknown_service(node_peer, registry):
    run = node_peer.run_parent({"connect": {"service_id": "nobody-home", "timeout_ms": 300}, "steps": []},
                               env={"MULTIFROST_REGISTRY": str(registry)})
    assert run.returncode == 1
    assert "nobody-home" in run.of("fatal")[0]["error"]
