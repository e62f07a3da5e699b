"""What a caller gets for a bad timeout or a ping to a worker that is not there: a clear
exception before anything is sent, the same in the sync and the async API."""
import math
import os
import signal
import time

import pytest
from hypothesis import given, settings, strategies as st

from helpers import CLIENTS
from math_worker import MathWorker
from multifrost import ParentWorker, TransportClosed, WorkerCrashedError
from multifrost.timeouts import check_timeout

HERE = os.path.dirname(os.path.abspath(__file__))
MATH = os.path.join(HERE, "workers", "math_worker.py")

BAD_TIMEOUTS = [(math.inf, ValueError), (-math.inf, ValueError), (math.nan, ValueError), (0, ValueError),
                (-1.5, ValueError), (10 ** 400, ValueError), (True, TypeError), (False, TypeError),
                ("1", TypeError), ([1], TypeError)]


class CountingWorker(MathWorker):
    """Counts the calls that reached it."""

    received = 0

    def counted(self):
        CountingWorker.received += 1
        return CountingWorker.received


@pytest.fixture(params=["sync", "async"])
def api(request):
    return request.param


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 20, 10 ** 20), st.booleans(),
                 st.none()))
@settings(max_examples=400, deadline=None, database=None)
def test_the_timeout_rule(value):
    valid = value is None or (not isinstance(value, bool) and math.isfinite(value) and value > 0)
    if valid:
        assert check_timeout(value) == (None if value is None else float(value))
    else:
        with pytest.raises(TypeError if isinstance(value, bool) else ValueError, match="timeout"):
            check_timeout(value)


@pytest.mark.parametrize("transport", ["memory", "inproc"])
def test_a_bad_timeout_is_refused_before_anything_is_sent(api, transport):
    CountingWorker.received = 0
    client = CLIENTS[api](ParentWorker.inprocess(CountingWorker(), transport=transport))
    client.start()
    try:
        for bad, error in BAD_TIMEOUTS:
            with pytest.raises(error, match="timeout must be None"):
                client.call("counted", timeout=bad)
            assert CountingWorker.received == 0 and client.worker.metrics.requests == 0, bad
        assert client.call("counted", timeout=5) == 1  # a good one still goes through
        assert client.call("counted", timeout=None) == 2
    finally:
        client.close()


@pytest.mark.parametrize("bad, error", BAD_TIMEOUTS)
def test_a_bad_default_timeout_is_refused_when_the_worker_is_built(bad, error):
    with pytest.raises(error, match="default_timeout must be None"):
        ParentWorker.spawn(MATH, default_timeout=bad)
    with pytest.raises(error, match="default_timeout must be None"):
        ParentWorker.inprocess(MathWorker(), default_timeout=bad)


def _ping(client, **options):
    if client.api == "sync":
        return client.worker.ping(**options)
    return client.run(client.worker.aping(**options))


def test_ping_checks_its_timeout_too(api):
    client = CLIENTS[api](ParentWorker.inprocess(MathWorker()))
    client.start()
    try:
        assert _ping(client) >= 0 and _ping(client, timeout=5) >= 0
        with pytest.raises(ValueError, match="timeout"):
            _ping(client, timeout=math.inf)
        with pytest.raises(TypeError, match="timeout"):
            _ping(client, timeout=True)
    finally:
        client.close()


def test_ping_after_close_raises_transport_closed(api):
    client = CLIENTS[api](ParentWorker.spawn(MATH))
    client.start()
    assert _ping(client) >= 0
    worker = client.worker
    if api == "sync":
        client.close()
        with pytest.raises(TransportClosed, match="was closed"):
            worker.ping()
    else:
        try:
            client.run(worker.aclose())
            with pytest.raises(TransportClosed, match="was closed"):
                client.run(worker.aping())
        finally:
            client.close()


def test_ping_after_a_crash_raises_worker_crashed(api):
    client = CLIENTS[api](ParentWorker.spawn(MATH, heartbeat_interval=0))
    client.start()
    try:
        os.kill(client.worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while client.worker.pid is not None:  # the crash was handled: the process was torn down
            assert time.monotonic() < deadline, "the crash was never noticed"
            time.sleep(0.01)
        with pytest.raises(WorkerCrashedError, match="was killed by SIGKILL"):
            _ping(client)
    finally:
        client.close()
