"""The circuit breaker: its states on a fake clock, then end to end with workers that fail."""
import os
import signal
import time

import pytest

from helpers import CLIENTS
from multifrost import CircuitOpenError, ParentWorker, WorkerCrashedError, WorkerStartError
from multifrost.parent.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from multifrost.parent.lifecycle import backoff_delays

HERE = os.path.dirname(os.path.abspath(__file__))
FLAKY = os.path.join(HERE, "workers", "flaky_start.py")
MATH = os.path.join(HERE, "workers", "math_worker.py")


def test_opens_after_threshold_failures_in_a_row():
    breaker, now = CircuitBreaker(3, 10.0), 100.0
    breaker.record_failure(now)
    breaker.record_failure(now)
    breaker.record_success()  # an answer ends the run
    breaker.record_failure(now)
    breaker.record_failure(now)
    assert breaker.state(now) == CLOSED and breaker.allow(now) == "closed"
    breaker.record_failure(now)
    assert breaker.state(now) == OPEN and breaker.allow(now) is None


def test_half_open_lets_one_trial_through_and_it_decides():
    breaker, now = CircuitBreaker(1, 10.0), 100.0
    breaker.record_failure(now)
    assert breaker.half_open_at() == 110.0
    now += 9.9
    assert breaker.allow(now) is None
    now += 0.1
    assert breaker.state(now) == HALF_OPEN
    assert breaker.allow(now) == "trial"
    assert breaker.allow(now) is None and breaker.half_open_at() is None  # only one trial at a time
    breaker.record_failure(now)  # the trial failed: open again, for a full reset timeout
    assert breaker.state(now) == OPEN
    now += 10
    assert breaker.allow(now) == "trial"
    breaker.end_trial()  # neither success nor failure (a timeout): the next call may try
    assert breaker.allow(now) == "trial"
    breaker.record_success()
    assert breaker.state(now) == CLOSED and breaker.failures == 0


def test_success_while_open_does_not_close_but_reset_does():
    breaker, now = CircuitBreaker(2, 10.0), 100.0
    breaker.trip(now)
    breaker.record_success()  # a heartbeat that comes back while open is no trial
    assert breaker.state(now) == OPEN
    breaker.reset()
    assert breaker.state(now) == CLOSED and breaker.allow(now) == "closed"
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)


def test_restart_backoff_doubles_from_a_tenth_of_a_second_up_to_five():
    assert backoff_delays(8) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff_delays(5000)[-1] == 5.0


def _starts(path) -> int:
    return len(path.read_text().splitlines())


def _wait_until(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_child_that_crashes_at_startup_opens_the_circuit_without_spinning(api, tmp_path):
    starts, broken = tmp_path / "starts", tmp_path / "broken"
    client = CLIENTS[api](ParentWorker.spawn(FLAKY, auto_restart=True, max_restart_attempts=3,
                                             circuit_reset_timeout=0.5, heartbeat_interval=0, env={
                                                 "STARTS_FILE": str(starts), "BROKEN_FLAG": str(broken)}))
    client.start()
    try:
        broken.write_text("")  # from now on every start fails
        with pytest.raises(WorkerCrashedError):
            client.call("crash", 1, timeout=30)
        _wait_until(lambda: client.worker.circuit_open, "the circuit opened")
        assert _starts(starts) == 1 + 3  # the first start and exactly max_restart_attempts restarts
        assert not client.worker.is_healthy
        for _ in range(20):
            began = time.monotonic()
            with pytest.raises(CircuitOpenError):
                client.call("add", 1, 2, timeout=30)
            assert time.monotonic() - began < 1.0  # at once, not after the call's timeout
        # half-open after the reset timeout: one trial call restarts the child, and fails
        _wait_until(lambda: client.worker.circuit_state == HALF_OPEN, "the circuit turned half-open")
        with pytest.raises(WorkerStartError) as info:
            client.call("add", 1, 2, timeout=30)
        assert info.value.exit_code == 4 and "broken flag" in info.value.stderr_tail
        assert _starts(starts) == 5
        with pytest.raises(CircuitOpenError):
            client.call("add", 1, 2)
        assert _starts(starts) == 5  # nothing restarts it while the circuit is open
        # half-open again, the child is fixed: the trial call succeeds and closes the circuit
        broken.unlink()
        _wait_until(lambda: client.worker.circuit_state == HALF_OPEN, "the circuit turned half-open")
        assert client.call("add", 2, 3, timeout=30) == 5
        assert not client.worker.circuit_open and client.worker.is_healthy
        assert _starts(starts) == 6
    finally:
        client.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_manual_restart_closes_the_circuit(api, tmp_path):
    starts, broken = tmp_path / "starts", tmp_path / "broken"
    client = CLIENTS[api](ParentWorker.spawn(FLAKY, auto_restart=True, max_restart_attempts=1,
                                             circuit_reset_timeout=60, heartbeat_interval=0, env={
                                                 "STARTS_FILE": str(starts), "BROKEN_FLAG": str(broken)}))
    client.start()
    try:
        broken.write_text("")
        with pytest.raises(WorkerCrashedError):
            client.call("crash", 1, timeout=30)
        _wait_until(lambda: client.worker.circuit_open, "the circuit opened")
        with pytest.raises(WorkerStartError):
            client.restart()  # still broken: the restart fails and says why
        assert not client.worker.is_healthy
        broken.unlink()
        client.restart()
        assert not client.worker.circuit_open and client.worker.is_healthy
        assert client.call("add", 1, 2) == 3
        assert _starts(starts) == 4  # first start, one automatic restart, two manual ones
    finally:
        client.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_missed_heartbeats_open_the_circuit_and_a_trial_closes_it(api):
    """A wedged worker with a threshold of one: the misses open the circuit; after the child
    resumes, heartbeats alone do not close it, the half-open trial call does."""
    client = CLIENTS[api](ParentWorker.spawn(MATH, max_restart_attempts=1, circuit_reset_timeout=0.5,
                                             heartbeat_interval=0.05, heartbeat_timeout=0.2,
                                             heartbeat_max_misses=2))
    client.start()
    pid = client.worker.pid
    try:
        os.kill(pid, signal.SIGSTOP)
        _wait_until(lambda: client.worker.circuit_open, "the circuit opened")
        with pytest.raises(CircuitOpenError):
            client.call("add", 1, 2)
        os.kill(pid, signal.SIGCONT)
        _wait_until(lambda: client.worker.circuit_state == HALF_OPEN, "the circuit turned half-open")
        assert client.call("add", 1, 2, timeout=10) == 3  # the trial
        assert not client.worker.circuit_open
        _wait_until(lambda: client.worker.is_healthy, "the worker turned healthy")
        assert client.worker.pid == pid
    finally:
        os.kill(pid, signal.SIGCONT)
        client.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_children_that_die_before_answering_anything_open_the_circuit(api, tmp_path):
    """Every restart succeeds, but each new child dies before it answers a call: that is no
    recovery, so the run of failures goes on and the circuit opens after max_restart_attempts."""
    starts = tmp_path / "starts"
    client = CLIENTS[api](ParentWorker.spawn(FLAKY, auto_restart=True, max_restart_attempts=2,
                                             circuit_reset_timeout=60, heartbeat_interval=0,
                                             env={"STARTS_FILE": str(starts)}))
    client.start()
    try:
        assert client.call("add", 1, 1) == 2
        for restarts in range(3):
            with pytest.raises(WorkerCrashedError):
                client.call("crash", 9, timeout=30)  # waits for the restart first, then kills it
        _wait_until(lambda: client.worker.circuit_open, "the circuit opened")
        assert _starts(starts) == 3 and client.worker.metrics.restarts == 2
        with pytest.raises(CircuitOpenError):
            client.call("add", 1, 1)
    finally:
        client.close()
