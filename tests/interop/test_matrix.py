"""The cross-language matrix: multifrost's public Python API against the Node.js Multifrost v4 peer.

Directions: a Python ParentWorker calling the Node child (peer.js), and the Node parent
(peer.js parent) calling a Python ChildWorker (py_worker.py); each in spawn mode and in connect
mode, where both languages share one registry file (a temporary MULTIFROST_REGISTRY, never the
real one in the home directory).

What the JavaScript side does to values (msgpackr with ``useRecords: false``,
``int64AsType: "auto"``), checked below and summed up in the README:
- a whole number outside [-2^31, 2^32 - 1] but within +/-2^53 (e.g. 2^32 or 2^53 - 1) is packed
  as float64, so a Python int there comes back as a float; beyond 2^53 it is a BigInt and comes
  back as an int;
- a float with an integral value (2.0, and -0.0) is packed as an integer: it comes back as an int;
- NaN and +/-Infinity travel as nil (None / null), both ways;
- a JS object's keys are strings, so {1: "a"} comes back as {"1": "a"} (a JS Map may send int keys);
- ``undefined`` (msgpack ext 0) arrives in Python as None;
- bytes <-> Buffer (bin, never str), aware datetime <-> Date (millisecond precision);
- the Node child answers errors with the message only, a Python child adds its traceback.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multifrost import (CallTimeoutError, MultifrostError, ParentWorker, PayloadError, RemoteCallError,
                        WorkerCrashedError)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY_WORKER = HERE / "py_worker.py"
EXAMPLES = ROOT / "examples" / "node"
MIB = 1024 * 1024
LIVENESS = 15.0  # seconds: generous bound for anything that should happen "at once"
UTC = dt.timezone.utc
MOMENT = dt.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC)


def wait_until(condition, timeout: float = LIVENESS) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def nested(depth: int, leaf, wrap):
    for _ in range(depth):
        leaf = wrap(leaf)
    return leaf


def tag_bytes(data: bytes) -> dict:
    return {"$t": "bytes", "b64": base64.b64encode(data).decode()}


def bigint(value: int) -> dict:
    return {"$t": "bigint", "v": str(value)}


def spawn_node(node_peer, **options) -> ParentWorker:
    """A Python parent for a spawn-mode Node child (peer.js with no arguments: the child role)."""
    options.setdefault("default_timeout", LIVENESS)
    return ParentWorker.spawn("peer.js", executable=node_peer.node, cwd=str(HERE), **options)


def py_spawn(env: dict | None = None) -> dict:
    """The Node parent's `spawn` section for py_worker.py (run as `sh -c "python py_worker.py"`)."""
    return {"executable": shlex.quote(sys.executable), "script": shlex.quote(str(PY_WORKER)),
            "env": {"PYTHONPATH": str(ROOT), **(env or {})}}


@pytest.fixture(scope="module", autouse=True)
def module_registry(tmp_path_factory):
    """Every test runs with a temporary registry file (tests of connect mode get their own)."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("registry") / "services.json"
        patch.setenv("MULTIFROST_REGISTRY", str(path))
        yield path


@pytest.fixture
def registry(tmp_path, monkeypatch):
    path = tmp_path / "registry" / "services.json"
    monkeypatch.setenv("MULTIFROST_REGISTRY", str(path))
    return path


@pytest.fixture(scope="module")
def node_child(node_peer):
    """One Node child behind the sync Python API, shared by the value tests."""
    with spawn_node(node_peer, heartbeat_interval=0.2) as worker:
        yield worker


# ==== values, Python parent -> Node child -> Python ==============================================

# (id, value sent, what JavaScript received it as, what comes back). The type of what comes
# back is checked too: 2**53-1 returns as a float, -0.0 and 2.0 as ints.
PY_TO_JS = [
    ("0", 0, "number", 0),
    ("1", 1, "number", 1),
    ("-1", -1, "number", -1),
    ("2**31", 2**31, "number", 2**31),
    ("-2**31", -(2**31), "number", -(2**31)),
    ("2**32-1", 2**32 - 1, "number", 2**32 - 1),
    ("2**32", 2**32, "number", float(2**32)),  # outside 32 bits: float64 on the way back
    ("-2**31-1", -(2**31) - 1, "number", float(-(2**31) - 1)),
    ("2**53-1", 2**53 - 1, "number", float(2**53 - 1)),
    ("-(2**53-1)", -(2**53 - 1), "number", float(-(2**53 - 1))),
    ("2**53+1", 2**53 + 1, "bigint", 2**53 + 1),
    ("2**63-1", 2**63 - 1, "bigint", 2**63 - 1),
    ("-2**63", -(2**63), "bigint", -(2**63)),
    ("1.5", 1.5, "number", 1.5),
    ("1e308", 1e308, "number", 1e308),
    ("5e-324", 5e-324, "number", 5e-324),
    ("-0.0", -0.0, "number", 0),  # integral: an int on the way back
    ("2.0", 2.0, "number", 2),
    ("nan", float("nan"), "null", None),
    ("inf", float("inf"), "null", None),
    ("-inf", float("-inf"), "null", None),
    ("None", None, "null", None),
    ("True", True, "boolean", True),
    ("emoji-cjk", "😀🎉👩‍👩‍👧 中文字符 日本語 한국어", "string", "😀🎉👩‍👩‍👧 中文字符 日本語 한국어"),
    ("empty-str", "", "string", ""),
    ("bytes", bytes(range(256)), "Buffer", bytes(range(256))),
    ("empty-bytes", b"", "Buffer", b""),
    ("bytearray", bytearray(b"ab"), "Buffer", b"ab"),
    ("datetime-utc", MOMENT, "Date", MOMENT),
    ("datetime-us", MOMENT.replace(microsecond=123456), "Date", MOMENT.replace(microsecond=123000)),  # ms kept
    ("datetime+02:00", MOMENT.astimezone(dt.timezone(dt.timedelta(hours=2))), "Date", MOMENT),  # back in UTC
    ("list", [1, "two", None, [3.5]], "array", [1, "two", None, [3.5]]),
    ("tuple", (1, 2), "array", [1, 2]),
    ("dict", {"a": {"b": [1, {}]}}, "object", {"a": {"b": [1, {}]}}),
    ("int-keys", {1: "a", "b": 2}, "object", {"1": "a", "b": 2}),  # a JS object's keys are strings
]


@pytest.mark.parametrize(("value", "js_type", "back"), [c[1:] for c in PY_TO_JS], ids=[c[0] for c in PY_TO_JS])
def test_value_python_to_node_and_back(node_child, value, js_type, back):
    assert node_child.call.type_of(value) == js_type
    result = node_child.call.echo(value)
    assert result == back and type(result) is type(back)
    if isinstance(back, dt.datetime):
        assert result.utcoffset() == dt.timedelta(0)


def test_values_made_in_node(node_child):
    assert node_child.call.nothing() is None  # `undefined`
    assert node_child.call.int_keys() == {1: "one", 2: "two"}  # a JS Map may send int keys
    assert node_child.call.big(1000) == b"x" * 1000  # a Buffer arrives as bytes
    now = node_child.call.date_now()
    assert isinstance(now, dt.datetime) and now.utcoffset() == dt.timedelta(0)
    assert abs((now - dt.datetime.now(UTC)).total_seconds()) < 3600


def test_empty_args_to_node(node_child):
    assert node_child.call.echo_all() == []
    assert node_child.call.type_of() == "undefined"
    assert node_child.call_function("echo_all") == []


def test_nesting_50_deep_to_node(node_child):
    deep_list = nested(50, "leaf", lambda x: [x])
    deep_map = nested(50, 1, lambda x: {"k": x})
    assert node_child.call.echo(deep_list) == deep_list
    assert node_child.call.echo(deep_map) == deep_map


def test_lone_surrogate_is_refused_before_sending(node_child):
    requests = node_child.metrics.requests
    with pytest.raises(PayloadError, match="surrogates"):
        node_child.call.echo("ok \ud800")
    assert node_child.metrics.requests == requests  # refused before it became a call
    assert node_child.call.echo("ok") == "ok"


def test_16_mib_both_ways_with_node(node_child):
    blob = os.urandom(16 * MIB)
    back = node_child.call.echo(blob)
    assert type(back) is bytes and hashlib.sha256(back).digest() == hashlib.sha256(blob).digest()
    assert node_child.call.big(16 * MIB) == b"x" * (16 * MIB)


# ==== values, Node parent -> Python child -> Node ================================================

# (id, tagged value the Node parent sends, what the Python method received, tagged echo back).
JS_TO_PY = [
    ("0", 0, 0, 0),
    ("1", 1, 1, 1),
    ("-1", -1, -1, -1),
    ("2**31", 2**31, 2**31, 2**31),
    ("2**32-1", 2**32 - 1, 2**32 - 1, 2**32 - 1),
    ("-2**31", -(2**31), -(2**31), -(2**31)),
    ("2**32", 2**32, float(2**32), 2**32),  # a whole JS number outside 32 bits is float64 on the wire
    ("-2**31-1", -(2**31) - 1, float(-(2**31) - 1), -(2**31) - 1),
    ("2**53-1", 2**53 - 1, float(2**53 - 1), 2**53 - 1),
    ("2**53+1", bigint(2**53 + 1), 2**53 + 1, bigint(2**53 + 1)),
    ("2**63-1", bigint(2**63 - 1), 2**63 - 1, bigint(2**63 - 1)),
    ("-2**63", bigint(-(2**63)), -(2**63), bigint(-(2**63))),
    ("1.5", 1.5, 1.5, 1.5),
    ("1e308", 1e308, 1e308, 1e308),
    ("-0", {"$t": "float", "v": "-0"}, 0, 0),  # JavaScript packs -0 as the integer 0
    ("NaN", {"$t": "float", "v": "NaN"}, None, None),
    ("Infinity", {"$t": "float", "v": "Infinity"}, None, None),
    ("-Infinity", {"$t": "float", "v": "-Infinity"}, None, None),
    ("undefined", {"$t": "undefined"}, None, None),
    ("null", None, None, None),
    ("true", True, True, True),
    ("emoji-cjk", "😀🎉👩‍👩‍👧 中文字符 日本語", "😀🎉👩‍👩‍👧 中文字符 日本語", "😀🎉👩‍👩‍👧 中文字符 日本語"),
    ("Buffer", tag_bytes(b"\x00\xffbin"), b"\x00\xffbin", tag_bytes(b"\x00\xffbin")),
    ("Date", {"$t": "date", "ms": 1700000000123},
     dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC), {"$t": "date", "ms": 1700000000123}),
    ("object", {"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
    ("Map-int-keys", {"$t": "map", "entries": [[1, "one"], [2, "two"]]}, {1: "one", 2: "two"},
     {"1": "one", "2": "two"}),  # int keys reach Python; JavaScript makes them strings again
]


class Steps:
    """A Node parent scenario's step list, with names for the steps to look results up by."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.index: dict[str, int] = {}

    def add(self, name: str, step: dict) -> None:
        self.index[name] = len(self.steps)
        self.steps.append(step)


@pytest.fixture(scope="module")
def js_to_py(node_peer):
    """One Node parent run against one Python child, sending every value of JS_TO_PY and more."""
    steps = Steps()
    for name, arg, _, _ in JS_TO_PY:
        steps.add(f"show {name}", {"call": "show", "args": [arg]})
        steps.add(f"echo {name}", {"call": "echo", "args": [arg]})
    deep_list = nested(50, "leaf", lambda x: [x])
    deep_map = nested(50, 1, lambda x: {"k": x})
    steps.add("deep list", {"call": "echo", "args": [deep_list]})
    steps.add("deep map", {"call": "echo", "args": [deep_map]})
    steps.add("empty args", {"call": "echo_all", "args": []})
    steps.add("16 MiB type", {"call": "type_of", "args": [{"$t": "bytes", "len": 16 * MIB, "fill": 120}]})
    steps.add("16 MiB echo", {"call": "echo", "args": [{"$t": "bytes", "len": 16 * MIB, "fill": 120}]})
    run = node_peer.run_parent({"spawn": py_spawn(), "steps": steps.steps})
    assert run.returncode == 0, run.stderr
    return run, steps.index, deep_list, deep_map


def js_result(js_to_py, name: str):
    run, index, *_ = js_to_py
    found = run.result(index[name])
    assert found["ok"], found
    return found["result"]


@pytest.mark.parametrize(("name", "in_python", "back"), [(c[0], c[2], c[3]) for c in JS_TO_PY],
                         ids=[c[0] for c in JS_TO_PY])
def test_value_node_to_python_and_back(js_to_py, name, in_python, back):
    assert js_result(js_to_py, f"show {name}") == repr(in_python)  # repr tells int from float, bytes from str
    assert js_result(js_to_py, f"echo {name}") == back


def test_nesting_50_deep_and_empty_args_from_node(js_to_py):
    _, _, deep_list, deep_map = js_to_py
    assert js_result(js_to_py, "deep list") == deep_list
    assert js_result(js_to_py, "deep map") == deep_map
    assert js_result(js_to_py, "empty args") == []


def test_16_mib_both_ways_from_node(js_to_py):
    assert js_result(js_to_py, "16 MiB type") == "bytes"
    digest = hashlib.sha256(b"x" * (16 * MIB)).hexdigest()
    assert js_result(js_to_py, "16 MiB echo") == {"$t": "bytes", "len": 16 * MIB, "sha256": digest}


# ==== behaviour, Python parent -> Node child =====================================================

def test_node_error_is_message_only(node_child):
    with pytest.raises(RemoteCallError) as info:
        node_child.call.fail("the disk is full")
    assert str(info.value) == "the disk is full"
    assert info.value.remote_type is None and info.value.remote_traceback is None
    assert node_child.call.add(1, 1) == 2  # the child carries on


def test_node_error_message_with_a_colon_is_kept_whole(node_child):
    # A JavaScript error message such as "ENOENT: no such file" has no type prefix: the Node
    # child sends err.message only. It must reach str() unchanged.
    with pytest.raises(RemoteCallError) as info:
        node_child.call.fail("ENOENT: no such file")
    assert str(info.value) == "ENOENT: no such file"


@pytest.mark.parametrize(("function", "text"), [
    ("_secret", "Cannot call private method '_secret'"),
    ("no_such_function", "Function 'no_such_function' not found"),
])
def test_node_refuses_private_and_missing(node_child, function, text):
    with pytest.raises(RemoteCallError) as info:
        node_child.call_function(function, [])
    assert str(info.value) == text and not isinstance(info.value, WorkerCrashedError)


def test_node_namespace_mismatch_times_out(node_peer):
    with spawn_node(node_peer, env={"MULTIFROST_NAMESPACE": "math"}) as worker:
        assert worker.call_function("add", [1, 2], namespace="math") == 3
        assert worker.call.with_options(namespace="math").add(2, 2) == 4
        with pytest.raises(CallTimeoutError):
            worker.call.add(1, 2, timeout=0.3)  # "default": the child does not answer
        assert worker.call_function("add", [3, 3], namespace="math") == 6


def test_node_heartbeats_give_rtt(node_peer):
    with spawn_node(node_peer, heartbeat_interval=0.1, heartbeat_timeout=LIVENESS) as worker:
        assert wait_until(lambda: worker.last_heartbeat_rtt_ms is not None), "no heartbeat echo seen"
        assert 0 <= worker.last_heartbeat_rtt_ms < LIVENESS * 1000
        rtt = worker.ping(timeout=LIVENESS)
        assert 0 <= rtt < LIVENESS * 1000
        assert worker.is_healthy


def test_node_output_reaches_on_output(node_peer):
    seen = []
    with spawn_node(node_peer, on_output=lambda stream, text: seen.append((stream, text))) as worker:
        assert worker.call.print("hello from node") is None
        assert worker.call.print("careful", "stderr") is None
        assert wait_until(lambda: len(seen) >= 2)
    assert seen == [("stdout", "hello from node"), ("stderr", "careful")]


def test_500_concurrent_async_calls_to_node(node_peer):
    async def main():
        async with spawn_node(node_peer) as worker:
            return await asyncio.gather(*(worker.acall.add(i, i) for i in range(500)))

    assert asyncio.run(main()) == [2 * i for i in range(500)]


def test_node_exit_fails_in_flight_calls_at_once(node_peer):
    async def main():
        async with spawn_node(node_peer) as worker:
            started = time.monotonic()
            slow = [asyncio.ensure_future(worker.acall.slow(60_000, timeout=60)) for _ in range(5)]
            assert await worker.acall.add(1, 1) == 2  # answered after the slow calls arrived: they are in flight
            crash = asyncio.ensure_future(worker.acall.crash(timeout=60))
            outcomes = await asyncio.gather(*slow, crash, return_exceptions=True)
            return outcomes, time.monotonic() - started

    outcomes, elapsed = asyncio.run(main())
    assert all(isinstance(o, WorkerCrashedError) for o in outcomes), outcomes
    assert {o.exit_code for o in outcomes} == {3}
    assert elapsed < LIVENESS  # well before the calls' 60 s timeout


def test_node_exit_fails_the_sync_call(node_peer):
    with spawn_node(node_peer) as worker:
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError) as info:
            worker.call.crash(timeout=60)
        assert time.monotonic() - started < LIVENESS
        assert info.value.exit_code == 3
        with pytest.raises(WorkerCrashedError):
            worker.call.add(1, 2)  # no auto_restart: the worker stays down


# ==== behaviour, Node parent -> Python child =====================================================

def test_node_parent_drives_python_child(node_peer):
    steps = Steps()
    steps.add("add", {"call": "add", "args": [40, 2]})
    steps.add("fail", {"call": "fail", "args": ["boom"]})
    steps.add("private", {"call": "_private", "args": []})
    steps.add("missing", {"call": "no_such_function", "args": []})
    steps.add("other namespace", {"call": "add", "args": [1, 2], "namespace": "other", "timeout_ms": 300})
    steps.add("heartbeats", {"heartbeat": 3, "timeout_ms": LIVENESS * 1000})
    steps.add("say", {"call": "say", "args": ["hello from python"]})
    steps.add("say stderr", {"call": "say", "args": ["careful", "stderr"]})
    steps.add("outputs", {"wait_output": 2, "timeout_ms": LIVENESS * 1000})
    steps.add("500", {"call": "add", "args": ["$i", 1000], "count": 500, "timeout_ms": 30000})
    run = node_peer.run_parent({"spawn": py_spawn(), "steps": steps.steps})
    assert run.returncode == 0, run.stderr
    at = steps.index
    assert run.result(at["add"])["result"] == 42
    error = run.result(at["fail"])
    assert error["kind"] == "error" and error["error"].startswith("ValueError: boom\nTraceback (most recent call last):")
    assert 'in fail\n    raise ValueError(message)' in error["error"]
    assert run.result(at["private"])["error"] == "Cannot call private method '_private'"
    assert run.result(at["missing"])["error"] == "Function 'no_such_function' not found"
    assert run.result(at["other namespace"])["kind"] == "timeout"
    beats = run.of("heartbeat")
    assert len(beats) == 3 and all(b["ok"] and b["hb_timestamp_matches"] and b["hb_response"] for b in beats)
    assert run.of("output") == [{"event": "output", "stream": "stdout", "output": "hello from python\n"},
                                {"event": "output", "stream": "stderr", "output": "careful\n"}]
    assert sorted(run.result(at["500"], i)["result"] for i in range(500)) == list(range(1000, 1500))
    assert run.of("ignored") == []  # no late answer to the other namespace's call
    assert run.of("done")[0]["child_exit"] == {"code": 0, "signal": None}  # SHUTDOWN ends the child


def test_node_parent_python_child_namespace_from_env(node_peer):
    steps = [{"call": "add", "args": [1, 2], "namespace": "math"},
             {"call": "add", "args": [1, 2], "timeout_ms": 300}]
    run = node_peer.run_parent({"spawn": py_spawn({"MULTIFROST_NAMESPACE": "math"}), "steps": steps})
    assert run.returncode == 0, run.stderr
    assert run.result(0)["result"] == 3
    assert run.result(1)["kind"] == "timeout"


# ==== connect mode, one registry file for both languages =========================================

def test_python_parent_connects_to_node_service(node_peer, registry, tmp_path):
    service = node_peer.start_service("matrix-node-svc", registry, stderr=(tmp_path / "svc.log").open("wb"))
    try:
        ready = json.loads(service.stdout.readline() or "null")
        assert ready and ready["ready"] is True, f"service exited ({service.wait()}) before it was ready"
        with ParentWorker.connect("matrix-node-svc", timeout=5.0, default_timeout=LIVENESS) as worker:
            assert worker.call.add(20, 22) == 42
            assert worker.call.echo(-(2**63)) == -(2**63)
            assert worker.call.echo(b"\x00bin") == b"\x00bin"
            assert worker.call.pid() == service.pid
            with pytest.raises(RemoteCallError, match="^nope$"):
                worker.call.fail("nope")
            assert worker.ping(timeout=LIVENESS) >= 0
        assert service.poll() is None  # a connect-mode parent leaves the service running
        service.send_signal(signal.SIGTERM)
        assert service.wait(LIVENESS) == 0
        assert "matrix-node-svc" not in json.loads(registry.read_text())
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        service.stdout.close()


def test_node_parent_connects_to_python_service(node_peer, registry, tmp_path):
    with open(tmp_path / "svc.log", "wb") as log:
        service = subprocess.Popen([sys.executable, str(PY_WORKER), "--service-id", "matrix-py-svc"],
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        steps = [
            {"call": "add", "args": [20, 22]},
            {"call": "show", "args": [bigint(2**63 - 1)]},
            {"call": "echo", "args": [tag_bytes(b"\x00bin")]},
            {"call": "fail", "args": ["nope"]},
            {"call": "add", "args": [1, 2], "namespace": "other", "timeout_ms": 300},
            {"heartbeat": 1, "timeout_ms": LIVENESS * 1000},
        ]
        run = node_peer.run_parent({"connect": {"service_id": "matrix-py-svc", "timeout_ms": LIVENESS * 1000},
                                    "steps": steps})
        assert run.returncode == 0, run.stderr + (tmp_path / "svc.log").read_text()
        assert run.of("started")[0]["port"] == json.loads(registry.read_text())["matrix-py-svc"]["port"]
        assert run.result(0)["result"] == 42
        assert run.result(1)["result"] == repr(2**63 - 1)
        assert run.result(2)["result"] == tag_bytes(b"\x00bin")
        assert run.result(3)["error"].startswith("ValueError: nope\nTraceback")
        assert run.result(4)["kind"] == "timeout"
        assert run.of("heartbeat")[0]["ok"] is True
        assert service.poll() is None  # the Node parent does not shut a service down
        service.send_signal(signal.SIGTERM)
        assert service.wait(LIVENESS) == 0
        assert "matrix-py-svc" not in json.loads(registry.read_text())
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


# ==== examples/node ==============================================================================

def test_examples_run(node_peer):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NODE_PATH": str(HERE / "node_modules")}
    python_parent = subprocess.run([sys.executable, "python_parent.py"], cwd=EXAMPLES, env=env,
                                   capture_output=True, text=True, timeout=60)
    assert python_parent.returncode == 0, python_parent.stderr
    assert python_parent.stdout.splitlines() == [
        "add(2, 3) = 5",
        "greet('Ada') = 'Hello, Ada, from Node.js'",
        "sha256(b'multifrost') = " + repr(hashlib.sha256(b"multifrost").hexdigest()),
        "fail: RemoteCallError('something went wrong in Node.js')",
    ]
    node_parent = subprocess.run([node_peer.node, "node_parent.js"], cwd=EXAMPLES, env=env,
                                 capture_output=True, text=True, timeout=60)
    assert node_parent.returncode == 0, node_parent.stderr
    assert node_parent.stdout.splitlines() == [
        "[python stdout] hello from the Python worker",
        "add(2, 3) = 5",
        "greet(\"Grace\") = \"Hello, Grace, from Python\"",
        "stats([1, 2, 3, 4]) = {\"count\":4,\"mean\":2.5}",
        "fail: ValueError: something went wrong in Python",
        "worker exited with code 0",
    ]


@pytest.mark.parametrize("python, says", [
    ("isolated", ["No module named 'multifrost'", "node_parent.js: the Python worker exited (code 1) before answering"]),
    ("missing", ["node_parent.js: cannot start the Python worker: spawn /nonexistent/python ENOENT"]),
])
def test_node_example_exits_with_the_error_when_its_worker_cannot_start(node_peer, tmp_path, python, says):
    """The worker cannot import multifrost (a Python without site-packages or PYTHONPATH), or
    there is no such Python: node_parent.js says so and exits 1 instead of waiting for ever."""
    if python == "isolated":
        wrapper = tmp_path / "python"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
        wrapper.chmod(0o755)
        python = str(wrapper)
    else:
        python = "/nonexistent/python"
    env = {**os.environ, "PYTHON": python, "NODE_PATH": str(HERE / "node_modules")}
    run = subprocess.run([node_peer.node, "node_parent.js"], cwd=EXAMPLES, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1, run.stderr
    for text in says:
        assert text in run.stderr
    assert run.stdout == ""


# ==== extensions (issue 15): a v4 peer never receives a type or top-level key it does not know ======

def test_python_parent_sends_a_node_child_nothing_unknown_sync(node_peer):
    with spawn_node(node_peer, heartbeat_interval=0.05) as worker:
        assert worker._channel.extensions == {}  # the echo of our own metadata is no announcement
        assert worker.call.add(1, 2) == 3
        with pytest.raises(CallTimeoutError):
            worker.call.slow(500, timeout=0.05)  # a timeout just stops waiting: no CANCEL goes out
        with pytest.raises(MultifrostError, match="does not speak the 'stream' extension"):
            worker.stream.add(1, 2)
        worker.ping()
        assert worker.call.slow(1) == 1
        assert worker.call.unknown_seen() == []
        assert worker.call.call_metadata_seen() == []  # no deadline, no traceparent, no mf_call


def test_python_parent_sends_a_node_child_nothing_unknown_async(node_peer):
    async def run():
        async with spawn_node(node_peer, heartbeat_interval=0.05) as worker:
            task = asyncio.ensure_future(worker.acall.slow(2000))
            await asyncio.sleep(0.05)
            task.cancel()  # cancelling the task just stops waiting
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(CallTimeoutError):
                await worker.acall.slow(500, timeout=0.05)
            with pytest.raises(MultifrostError, match="does not speak the 'stream' extension"):
                worker.astream.add(1, 2)
            await worker.aping()
            return await worker.acall.unknown_seen(), await worker.acall.call_metadata_seen()

    assert asyncio.run(run()) == ([], [])


def test_node_parent_gets_nothing_unknown_from_a_python_child(node_peer):
    steps = Steps()
    steps.add("heartbeats", {"heartbeat": 3, "timeout_ms": LIVENESS * 1000})
    steps.add("rows", {"call": "rows", "args": [5]})
    steps.add("timeout", {"call": "pause", "args": [0.5], "timeout_ms": 50})
    steps.add("add", {"call": "add", "args": [1, 2]})
    run = node_peer.run_parent({"spawn": py_spawn(), "steps": steps.steps})
    assert run.returncode == 0, run.stderr
    assert run.result(steps.index["rows"])["result"] == [0, 1, 2, 3, 4]  # a generator method, collected
    assert run.result(steps.index["timeout"])["kind"] == "timeout"
    assert run.result(steps.index["add"])["result"] == 3
    beats = run.of("heartbeat")
    assert len(beats) == 3 and all(b["ok"] and b["hb_response"] for b in beats)
    assert run.of("done")[0]["unknown"] == []


def test_the_node_child_does_record_what_v4_does_not_define(node_peer):
    """The recorder the tests above rely on: an extension message sent anyway is listed."""
    from multifrost import extensions
    from multifrost.codec import pack_message

    with spawn_node(node_peer) as worker:
        assert worker._channel.post(pack_message(extensions.credit("x", 3)))
        assert wait_until(lambda: worker.call.unknown_seen() == ["key:credit", "type:credit"], 5)
