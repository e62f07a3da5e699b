"""The ``multifrost`` command, driven as a user drives it: ``python -m multifrost ...``."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

import multifrost
from multifrost.cli import parse_arg, to_jsonable
from multifrost.registry import FileRegistry

PACKAGE_ROOT = str(Path(multifrost.__file__).resolve().parents[1])


def child_env(registry: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    if registry is not None:
        env["MULTIFROST_REGISTRY"] = str(registry)
    return env


def run(*args: str, registry: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multifrost", *args],
        capture_output=True,
        text=True,
        env=child_env(registry),
        timeout=timeout,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> str:
    """Exit status ``code``, nothing on stdout, and one line on stderr holding every fragment."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("multifrost: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("-2.5", -2.5),
        ("true", True),
        ("null", None),
        ('"quoted"', "quoted"),
        ('[1, "a", {"b": null}]', [1, "a", {"b": None}]),
        ("hello", "hello"),
        ("hello world", "hello world"),
        ("{broken", "{broken"),
        ("NaN", "NaN"),
        ("-Infinity", "-Infinity"),
        ("", ""),
    ],
)
def test_parse_arg(text, value):
    assert parse_arg(text) == value
    assert type(parse_arg(text)) is type(value)


def test_to_jsonable_handles_what_json_cannot():
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    value = {
        "bytes": b"\x00\xff",
        "view": memoryview(b"ab"),
        "when": when,
        "floats": [math.nan, math.inf, 1.5],
        "tuple": (1, 2),
        1: "int key",
        b"k": "bytes key",
        "obj": object,
    }
    out = to_jsonable(value)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["bytes"] == "AP8=" and out["view"] == "YWI="
    assert out["when"] == "2024-01-02T03:04:05+00:00"
    assert out["floats"] == [None, None, 1.5]
    assert out["tuple"] == [1, 2]
    assert out["1"] == "int key" and out["aw=="] == "bytes key"
    assert out["obj"] == repr(object)


# -- services and prune -------------------------------------------------------------------


def test_services_empty_names_the_registry(registry_path):
    result = run("services")
    assert result.returncode == 0, result.stderr
    assert str(registry_path) in result.stdout
    assert result.stderr == ""


def test_services_table_and_json(registry_path, dead_pid):
    reg = FileRegistry()
    live = reg.register("alpha", 6001)
    dead = reg.register("beta-service", 6002, pid=dead_pid)
    result = run("services")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "PORT", "PID", "STATUS", "STARTED"]
    assert lines[1].split() == ["alpha", "6001", str(os.getpid()), "alive", live.started]
    assert lines[2].split() == ["beta-service", "6002", str(dead_pid), "dead", dead.started]
    assert len(lines) == 3

    result = run("services", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "alpha": {"port": 6001, "pid": os.getpid(), "started": live.started, "alive": True},
        "beta-service": {"port": 6002, "pid": dead_pid, "started": dead.started, "alive": False},
    }


def test_prune_removes_dead_entries_and_says_which(dead_pid):
    reg = FileRegistry()
    reg.register("live", 6003)
    reg.register("gone-1", 6004, pid=dead_pid)
    reg.register("gone-2", 6005, pid=dead_pid)
    result = run("prune")
    assert result.returncode == 0, result.stderr
    assert "gone-1" in result.stdout and "gone-2" in result.stdout and "live" not in result.stdout
    assert set(reg.entries()) == {"live"}
    result = run("prune")
    assert result.returncode == 0 and result.stdout.strip() == "no dead services"


@pytest.mark.parametrize("command", [["services"], ["prune"], ["call", "svc", "f"], ["ping", "svc"]])
def test_corrupt_registry_is_one_line(registry_path, command):
    registry_path.parent.mkdir(parents=True)
    registry_path.write_text("{oops")
    assert_one_line_failure(run(*command), "registry error", str(registry_path))
    assert registry_path.read_text() == "{oops"


# -- failures before any connection --------------------------------------------------------


@pytest.mark.parametrize("command", ["call", "ping"])
def test_unknown_service(registry_path, command):
    args = [command, "nosuch"] + (["add", "1", "2"] if command == "call" else [])
    assert_one_line_failure(run(*args), "'nosuch'", str(registry_path))


@pytest.mark.parametrize("command", ["call", "ping"])
def test_dead_service(dead_pid, command):
    FileRegistry().register("ghost", 6006, pid=dead_pid)
    args = [command, "ghost"] + (["add"] if command == "call" else [])
    assert_one_line_failure(run(*args), "'ghost'", str(dead_pid), "prune")


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "COMMAND"),
        (["bogus"], "bogus"),
        (["call", "svc"], "function"),
        (["call", "svc", "f", "--timeout", "soon"], "--timeout"),
        (["call", "svc", "f", "--timeout", "0"], "--timeout"),
        (["call", "svc", "f", "--args", "[1,"], "--args is not valid JSON"),
        (["call", "svc", "f", "--args", '{"a": 1}'], "JSON array"),
        (["call", "svc", "f", "1", "--args", "[1]"], "not both"),
        (["ping"], "service"),
        (["demo", "--calls", "none"], "--calls"),
    ],
)
def test_bad_command_lines(args, fragment):
    assert_one_line_failure(run(*args), fragment, code=2)


def test_help():
    result = run("--help")
    assert result.returncode == 0
    for command in ("services", "call", "ping", "prune", "demo"):
        assert command in result.stdout


def test_ctrl_c_exits_130_quietly(registry_path):
    # A held JavaScript-style lock keeps `prune` waiting inside the registry; interrupt it there.
    registry_path.parent.mkdir(parents=True)
    (registry_path.parent / "services.json.lock").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "multifrost", "prune"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while not (registry_path.parent / "services.lock").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "prune never took the file lock"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert out == "" and err == ""
    assert not (registry_path.parent / "services.lock").exists()


# -- against a running service (these need the RPC core) -------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A demo worker in connect mode: (service id, its registry file)."""
    registry = tmp_path_factory.mktemp("svc") / "services.json"
    service_id = f"demo-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "multifrost._demo_worker", "--service", service_id],
        env=child_env(registry),
    )
    try:
        deadline = time.monotonic() + 30
        while not ((entry := FileRegistry(registry).lookup(service_id)) and entry.pid == proc.pid):
            assert proc.poll() is None, f"the demo worker exited with status {proc.returncode}"
            assert time.monotonic() < deadline, "the demo worker never registered"
            time.sleep(0.02)
        yield service_id, registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call(service, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    service_id, registry = service
    return run("call", service_id, *args, registry=registry, timeout=timeout)


def test_call_prints_the_result(service):
    result = call(service, "add", "1", "2")
    assert (result.returncode, result.stdout, result.stderr) == (0, "3\n", "")
    result = call(service, "echo", "hello world")
    assert (result.returncode, result.stdout) == (0, "hello world\n")


def test_call_json_arguments_and_output(service):
    result = call(service, "echo", '{"a": [1, 2.5, null], "b": "x"}', "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"a": [1, 2.5, None], "b": "x"}
    result = call(service, "echo", "--args", '["5"]', "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "5"
    result = call(service, "add", "--args", "[[1], [2]]", "--json")
    assert json.loads(result.stdout) == [1, 2]


def test_call_json_output_with_bytes_and_datetime(service):
    result = call(service, "wire_types", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["bytes"] == "AP8="
    assert datetime.fromisoformat(out["datetime"]) == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert out["int"] == -(2**63) and out["str"] == "héllo" and out["map"] == {"nested": {"x": 1}}


def test_call_pretty_output_of_a_structure(service):
    result = call(service, "echo", '{"k": [1, 2]}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == "{'k': [1, 2]}\n"


def test_call_remote_error_is_one_line(service):
    line = assert_one_line_failure(call(service, "divide", "1", "0"), "ZeroDivisionError", "division by zero")
    assert "remote error" in line


def test_call_unknown_function(service):
    assert_one_line_failure(call(service, "no_such_function"), "no_such_function", "not found")


def test_call_timeout(service):
    start = time.monotonic()
    assert_one_line_failure(call(service, "sleep", "2", "--timeout", "0.5"), "timeout", "0.5 s")
    assert time.monotonic() - start < 30


def test_call_wrong_namespace_times_out_with_a_hint(service):
    assert_one_line_failure(
        call(service, "add", "1", "2", "--namespace", "elsewhere", "--timeout", "0.5"), "timeout", "'elsewhere'"
    )


def test_ping(service):
    service_id, registry = service
    result = run("ping", service_id, registry=registry)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(rf"{service_id}: heartbeat round trip (\d+\.\d+) ms \(port \d+, pid \d+\)\n", result.stdout)
    assert match, result.stdout
    assert 0 < float(match.group(1)) < 5000


def test_demo():
    result = run("demo", "--calls", "200", timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^codec: \S+", out, re.M)
    assert "add(2, 3) = 5" in out
    assert "fib(90) = 2880067194370816120" in out
    assert "greet('world') = 'Hello, world!'" in out
    assert "ZeroDivisionError" in out
    assert re.search(r"latency: median \d+\.\d µs, p99 \d+\.\d µs over 200 sync", out)


def test_vv_shows_the_message_traffic(service):
    result = call(service, "add", "1", "2", "-vv")
    assert result.returncode == 0 and result.stdout == "3\n", result.stderr
    wire = [line for line in result.stderr.splitlines() if line.startswith("multifrost.wire DEBUG: ")]
    assert any(" call " in line and "add() in default" in line and "to tcp://127.0.0.1:" in line for line in wire), wire
    assert any(line.startswith("multifrost.wire DEBUG: received response ") for line in wire), wire
    quiet = call(service, "add", "1", "2", "-v")
    assert "multifrost.wire" not in quiet.stderr


def test_demo_vv_shows_the_message_traffic():
    result = run("demo", "--calls", "1", "-vv", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "multifrost.wire DEBUG: sent call " in result.stderr
    assert "multifrost.wire DEBUG: received response " in result.stderr
