"""Connect mode: services found by id in the registry, shared by several parents."""
import os
import subprocess
import sys
import time

import pytest

from helpers import CLIENTS, stop_all
from multifrost import ParentWorker, ServiceNotFoundError, CallTimeoutError
from multifrost.registry import FileRegistry

SERVICE = """
import os, sys
sys.path.insert(0, {workers!r})
from math_worker import MathWorker, OtherNamespace
cls = OtherNamespace if os.environ.get("TEST_NAMESPACE") == "math" else MathWorker
cls(service_id=sys.argv[1]).run()
"""


@pytest.fixture
def start_service(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE.format(workers=os.path.join(os.path.dirname(__file__), "workers")))
    procs = []

    def start(service_id, env=None, wait=True):
        proc = subprocess.Popen([sys.executable, str(script), service_id], env={**os.environ, **(env or {})})
        procs.append(proc)
        if wait:
            FileRegistry().discover(service_id, timeout=20)
            deadline = time.monotonic() + 20
            while FileRegistry().lookup(service_id).pid != proc.pid:
                assert time.monotonic() < deadline, "the service did not register"
                time.sleep(0.02)
        return proc

    yield start
    stop_all(procs)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_connect_and_call(api, start_service):
    start_service("math")
    client = CLIENTS[api](ParentWorker.connect("math", timeout=5.0))
    client.start()
    try:
        assert client.call("add", 2, 3) == 5
        assert client.worker.pid is None
        assert client.worker.endpoint.startswith("tcp://127.0.0.1:")
    finally:
        client.close()
    assert FileRegistry().lookup("math") is not None  # closing a parent leaves the service running


@pytest.mark.parametrize("api", ["sync", "async"])
def test_missing_service(api, registry_path):
    client = CLIENTS[api](ParentWorker.connect("nobody", timeout=0.3))
    with pytest.raises(ServiceNotFoundError) as info:
        client.start()
    assert "nobody" in str(info.value) and str(registry_path) in str(info.value)


def test_sigterm_unregisters(start_service):
    proc = start_service("svc")
    proc.terminate()
    assert proc.wait(timeout=20) == 0
    assert FileRegistry().lookup("svc") is None


def test_namespaces_in_connect_mode(start_service):
    start_service("ns", env={"TEST_NAMESPACE": "math"})
    with ParentWorker.connect("ns") as worker:
        assert worker.call.with_options(namespace="math").add(1, 2) == 3
        with pytest.raises(CallTimeoutError):
            worker.call.add(1, 2, timeout=0.3)


PARENT = """
import sys
from multifrost import ParentWorker
tag = int(sys.argv[1])
with ParentWorker.connect("shared") as w:
    for i in range(200):
        assert w.call.echo([tag, i]) == [tag, i]
print("ok", tag)
"""


def test_three_parent_processes_share_one_service(start_service, tmp_path):
    start_service("shared")
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    procs = [subprocess.Popen([sys.executable, str(script), str(tag)], stdout=subprocess.PIPE, text=True)
             for tag in range(3)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert sorted(outputs) == ["ok 0\n", "ok 1\n", "ok 2\n"]


@pytest.mark.parametrize("api", ["sync", "async"])
def test_service_restarted_elsewhere_is_found_again(api, start_service):
    first = start_service("moving")
    client = CLIENTS[api](ParentWorker.connect("moving", heartbeat_interval=0.1, heartbeat_timeout=0.2,
                                               heartbeat_max_misses=1))
    client.start()
    try:
        assert client.call("add", 1, 1) == 2
        old_port = client.worker.endpoint
        first.kill()
        first.wait()
        deadline = time.monotonic() + 20
        while client.worker.is_healthy:  # the parent notices the missed heartbeats
            assert time.monotonic() < deadline, "the parent never noticed the service was gone"
            time.sleep(0.01)
        second = start_service("moving", wait=False)  # a new process takes over the id (the dead pid's entry)
        assert client.call("add", 2, 2, timeout=30) == 4  # waits for the reconnect within its timeout
        assert client.worker.endpoint != old_port
        assert FileRegistry().lookup("moving").pid == second.pid
    finally:
        client.close()


SIGTERM_AT_REGISTRATION = """
import contextlib, os, signal, sys
sys.path.insert(0, {workers!r})
import multifrost.service
from math_worker import MathWorker
registered = multifrost.service.serving

@contextlib.contextmanager
def serving(worker):
    with registered(worker) as end:
        os.kill(os.getpid(), signal.SIGTERM)  # the moment the service is in the registry, before it serves
        yield end
multifrost.service.serving = serving
MathWorker(service_id=sys.argv[1]).run()
"""


def test_a_sigterm_the_moment_a_service_registered_still_unregisters_it(tmp_path, registry_path):
    script = tmp_path / "service.py"
    script.write_text(SIGTERM_AT_REGISTRATION.format(workers=os.path.join(os.path.dirname(__file__), "workers")))
    proc = subprocess.Popen([sys.executable, str(script), "early"])
    assert proc.wait(timeout=30) == 0  # stopped by its own handler, not killed by the signal
    assert FileRegistry().lookup("early") is None
