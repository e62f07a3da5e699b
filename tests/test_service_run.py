"""Running a service: a failed start or an unclean registry says one line (no traceback) and
exits 1 (start) or 0 (clean stop); ChildWorker.run() works from any thread, and two services
run side by side in two threads of one process."""
import os
import signal
import subprocess
import sys
import threading

import pytest

from helpers import CLIENTS
from math_worker import MathWorker
from multifrost import ParentWorker
from multifrost.errors import RegistryError
from multifrost.registry import FileRegistry

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = os.path.join(HERE, "workers", "math_service.py")


def _service(service_id: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SERVICE, service_id], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_service_that_loses_the_race_for_its_id_exits_1_with_one_line():
    first = _service("twice")
    try:
        FileRegistry().discover("twice", timeout=30)
        second = _service("twice")
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1
        line = _one_line(err)
        assert f"already registered by running pid {first.pid}" in line
        assert "stop that process or choose another service id" in line
        assert FileRegistry().lookup("twice").pid == first.pid  # the first one goes on
    finally:
        first.terminate()
        first.communicate(timeout=30)


def test_a_service_on_a_corrupt_registry_exits_1_with_one_line(registry_path):
    registry_path.parent.mkdir(parents=True)
    registry_path.write_text("{not json")
    proc = _service("corrupt")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    line = _one_line(err)
    assert "is not valid JSON" in line and "repair or delete it" in line


def test_a_service_stopped_while_the_registry_is_corrupt_exits_0_with_one_line(registry_path):
    proc = _service("stopping")
    try:
        FileRegistry().discover("stopping", timeout=30)
        registry_path.write_text("{not json")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    line = _one_line(err)
    assert "stopped but could not unregister" in line and "repair or delete it" in line


class _Threaded:
    """A service run by ChildWorker.run() in a thread of this process."""

    def __init__(self, service_id: str) -> None:
        self.worker = MathWorker(service_id=service_id)
        self.error = None
        self.thread = threading.Thread(target=self._run, name=f"test-service-{service_id}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "stop() did not end run() in its thread"
        assert self.error is None, self.error


@pytest.mark.parametrize("api", ["sync", "async"])
def test_two_services_run_in_two_threads_of_one_process(api):
    services = [_Threaded("left"), _Threaded("right")]
    try:
        for service_id in ("left", "right"):
            assert FileRegistry().discover(service_id, timeout=30).pid == os.getpid()
        clients = [CLIENTS[api](ParentWorker.connect(s, default_timeout=30)) for s in ("left", "right")]
        for client in clients:
            client.start()
        try:
            for i, client in enumerate(clients):
                assert client.call("add", i, 10) == i + 10
                assert client.call("aadd", i, 20) == i + 20
        finally:
            for client in clients:
                client.close()
    finally:
        for service in services:
            service.stop()
    assert FileRegistry().entries() == {}  # both unregistered


def test_stop_before_run_serves_makes_it_return():
    service = _Threaded("early")
    service.stop()  # maybe before run() has a loop: it must still end


def test_a_service_thread_that_cannot_register_raises_in_its_thread(registry_path):
    registry_path.parent.mkdir(parents=True)
    registry_path.write_text("[]")
    service = _Threaded("refused")
    service.thread.join(30)
    assert isinstance(service.error, RegistryError) and "repair or delete it" in str(service.error)
