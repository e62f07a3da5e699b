"""worker.metrics: counters, the bounded latency window, heartbeats, NullMetrics, Prometheus text."""
import threading
import time

import pytest

from math_worker import MathWorker
from multifrost import CallTimeoutError, ParentWorker, RemoteCallError
from multifrost.metrics import Metrics, NullMetrics


@pytest.fixture
def worker():
    worker = ParentWorker.inprocess(MathWorker(), default_timeout=20.0).start()
    yield worker
    worker.close()


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_successes_errors_and_timeouts_are_counted(worker):
    for i in range(5):
        assert worker.call.add(i, 1) == i + 1
    for _ in range(2):
        with pytest.raises(RemoteCallError):
            worker.call.fail("no")
    with pytest.raises(CallTimeoutError):
        worker.call.sleep(0.3, timeout=0.02)
    snap = worker.metrics.snapshot()
    assert snap["enabled"] is True
    assert snap["requests_total"] == 8
    assert snap["requests_succeeded"] == 5
    assert snap["requests_failed"] == 2
    assert snap["requests_timed_out"] == 1
    assert snap["in_flight"] == 0
    latency = snap["latency_ms"]
    assert latency["window"] == 8
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert latency["max"] >= 20  # the timed-out call waited its 20 ms timeout
    assert snap["restarts"] == 0 and snap["circuit_state"] == "closed"


def test_in_flight_counts_a_call_until_it_returns(worker):
    caller = threading.Thread(target=worker.call.sleep, args=(0.3,))
    caller.start()
    wait_until(lambda: worker.metrics.snapshot()["in_flight"] == 1)
    caller.join()
    snap = worker.metrics.snapshot()
    assert snap["in_flight"] == 0 and snap["requests_succeeded"] == 1
    assert snap["latency_ms"]["max"] >= 300


def test_heartbeat_rtt_last_and_average(worker):
    assert worker.metrics.snapshot()["heartbeat_rtt_ms"] == {"last": None, "avg": None}
    rtts = [worker.ping() for _ in range(3)]
    heartbeat = worker.metrics.snapshot()["heartbeat_rtt_ms"]
    assert heartbeat["last"] == rtts[-1]
    assert heartbeat["avg"] == pytest.approx(sum(rtts) / 3)


def test_the_window_is_bounded_and_slides(worker):
    worker.metrics = Metrics(window=16)
    for _ in range(40):
        worker.call.add(1, 2)
    worker.call.sleep(0.05)  # the slowest call is the newest one in the window
    snap = worker.metrics.snapshot()
    assert snap["requests_total"] == 41
    assert snap["latency_ms"]["window"] == 16
    assert snap["latency_ms"]["max"] >= 50
    assert len(worker.metrics._window) == 16
    for _ in range(16):
        worker.call.add(1, 2)
    assert worker.metrics.snapshot()["latency_ms"]["max"] < 50  # the slow call slid out


def test_percentiles_of_known_latencies():
    metrics = Metrics(window=100)
    for ms in range(1, 201):  # only 101..200 stay in the window
        metrics.call_started()
        metrics.call_finished(ms / 1000, "ok")
    latency = metrics.snapshot()["latency_ms"]
    assert latency["p50"] == pytest.approx(151)
    assert latency["p90"] == pytest.approx(191)
    assert latency["p99"] == pytest.approx(200)
    assert latency["max"] == pytest.approx(200)
    assert latency["sum_all_calls"] == pytest.approx(sum(range(1, 201)))


def test_counters_are_exact_under_threads():
    metrics = Metrics(window=64)
    per_thread, threads = 20_000, 4

    def hammer():
        for _ in range(per_thread):
            metrics.call_started()
            metrics.call_finished(0.001, "ok")

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    snap = metrics.snapshot()
    assert snap["requests_total"] == snap["requests_succeeded"] == per_thread * threads
    assert snap["in_flight"] == 0


def test_null_metrics_count_no_calls_but_keep_heartbeats(worker):
    worker.metrics = NullMetrics()
    assert worker.call.add(1, 2) == 3
    worker.ping()
    snap = worker.metrics.snapshot()
    assert snap["enabled"] is False
    assert snap["requests_total"] == 0 and snap["latency_ms"]["window"] == 0
    assert snap["heartbeat_rtt_ms"]["last"] is not None


def test_prometheus_text(worker):
    worker.call.add(1, 2)
    with pytest.raises(RemoteCallError):
        worker.call.fail("no")
    text = worker.metrics.to_prometheus(labels={"worker": 'math "1"'})
    samples = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['multifrost_requests_total{worker="math \\"1\\"",outcome="ok"}'] == 1
    assert samples['multifrost_requests_total{worker="math \\"1\\"",outcome="error"}'] == 1
    assert samples['multifrost_call_latency_seconds_count{worker="math \\"1\\""}'] == 2
    assert samples['multifrost_circuit_open{worker="math \\"1\\""}'] == 0
    assert "# TYPE multifrost_call_latency_seconds summary" in text
    assert not any("heartbeat_rtt_seconds{" in line for line in text.splitlines())  # no heartbeat yet


def test_metrics_can_be_switched_off():
    from math_worker import MathWorker
    from multifrost import ParentWorker
    with ParentWorker.inprocess(MathWorker(), metrics=False) as worker:
        assert worker.call.add(1, 2) == 3
        snapshot = worker.metrics.snapshot()
    assert snapshot["enabled"] is False and snapshot["requests_total"] == 0
