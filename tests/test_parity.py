"""The same faults through both APIs: the same exception type and the same state afterwards.

One table drives the sync and the async API; each row runs a fault and records what the
caller saw (the exception types) and the worker's state after it (``is_healthy``,
``circuit_state``, whether ``pid`` is None). Both APIs must match the row.
"""
import os
import signal

import pytest

from helpers import CLIENTS, wait_until
from multifrost import (CallTimeoutError, CircuitOpenError, ParentWorker, TransportClosed, WorkerCrashedError)

HERE = os.path.dirname(os.path.abspath(__file__))
MATH = os.path.join(HERE, "workers", "math_worker.py")


def _close(client):
    """Close the worker (the test's client stays usable for the checks and its own cleanup)."""
    if client.api == "sync":
        client.worker.close()
    else:
        client.run(client.worker.aclose())


def _kill(client):
    pid = client.worker.pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: client.worker.pid is None, "the crash was noticed")


def call_after_close(client):
    _close(client)
    return [_outcome(client.call, "add", 1, 2)]


def ping_after_close(client):
    _close(client)
    return [_outcome(_ping, client)]


def ping_after_crash(client):
    _kill(client)
    return [_outcome(_ping, client)]


def crash_with_calls_in_flight(client):
    results = client.fire([("asleep", (60,))] * 5)
    wait_until(lambda: client.worker.metrics.in_flight == 5, "the calls are in flight")
    os.kill(client.worker.pid, signal.SIGKILL)
    return results(30)


def timeout(client):
    return [_outcome(client.call, "sleep", 2, timeout=0.1)]


def circuit_open(client):
    _kill(client)  # threshold 1 (max_restart_attempts=1, no auto_restart): the crash opens it
    return [_outcome(client.call, "add", 1, 2)]


def restart_while_calls_wait(client):
    results = client.fire([("asleep", (60,))] * 3)
    wait_until(lambda: client.worker.metrics.in_flight == 3, "the calls are in flight")
    client.restart()
    return results(30)


def close_while_calls_wait(client):
    results = client.fire([("asleep", (60,))] * 3)
    wait_until(lambda: client.worker.metrics.in_flight == 3, "the calls are in flight")
    _close(client)
    return results(30)


def call_after_crash(client):
    _kill(client)
    return [_outcome(client.call, "add", 1, 2)]


def restart_after_close(client):
    _close(client)
    return [_outcome(client.restart)]


def restart_after_crash(client):
    _kill(client)
    return [_outcome(client.restart), _outcome(client.call, "add", 1, 2)]


def call_during_auto_restart(client):
    """A call made while the crashed child is being restarted waits for the new one."""
    old = client.worker.pid
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: client.worker.pid != old, "the crash was noticed")
    return [_outcome(client.call, "add", 1, 2, timeout=30)]


#: fault -> (options, exception types seen, (is_healthy, circuit_state, pid is None) afterwards)
TABLE = {
    call_after_close: ({}, [TransportClosed], (False, "closed", True)),
    ping_after_close: ({}, [TransportClosed], (False, "closed", True)),
    ping_after_crash: ({}, [WorkerCrashedError], (False, "closed", True)),
    crash_with_calls_in_flight: ({}, [WorkerCrashedError] * 5, (False, "closed", True)),
    timeout: ({}, [CallTimeoutError], (True, "closed", False)),
    circuit_open: ({"max_restart_attempts": 1}, [CircuitOpenError], (False, "open", True)),
    restart_while_calls_wait: ({}, [WorkerCrashedError] * 3, (True, "closed", False)),
    close_while_calls_wait: ({}, [TransportClosed] * 3, (False, "closed", True)),
    call_after_crash: ({}, [WorkerCrashedError], (False, "closed", True)),
    restart_after_close: ({}, [TransportClosed], (False, "closed", True)),
    restart_after_crash: ({}, [type(None), int], (True, "closed", False)),
    call_during_auto_restart: ({"auto_restart": True}, [int], (True, "closed", False)),
}


def _ping(client):
    if client.api == "sync":
        return client.worker.ping(timeout=5)
    return client.run(client.worker.aping(timeout=5))


def _outcome(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        return exc


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("fault", list(TABLE), ids=lambda fault: fault.__name__)
def test_both_apis_fail_the_same_way(api, fault):
    options, raised, state = TABLE[fault]
    client = CLIENTS[api](ParentWorker.spawn(MATH, heartbeat_interval=0.2, **options))
    client.start()
    try:
        outcomes = fault(client)
        assert [type(o) for o in outcomes] == raised, outcomes
        worker = client.worker
        assert (worker.is_healthy, worker.circuit_state, worker.pid is None) == state
    finally:
        client.close()
