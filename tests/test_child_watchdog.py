"""The watchdog: it takes over the reading while an inline method holds the loop, and it sleeps
(parks) while nothing runs inline instead of waking 100 times a second."""
import glob
import os
import threading
import time

from helpers import wait_until
from multifrost import ParentWorker
from multifrost.child_watchdog import PARK, TAKEOVER, Watchdog
from multifrost.transports.base import Wakeup


class _Worker:
    """What the watchdog reads of a worker: the inline run's start, the reader, the wake-up."""

    def __init__(self):
        self._inline_since = None
        self.passes = 0
        self.steps = []
        self._io = self

    def _serve_ready(self):
        self.passes += 1
        self.steps.append("pass")

    def clear_wakeup(self):
        pass

    def uncork(self):
        self.steps.append("uncork")


def _watching(worker):
    wakeup_r, wakeup_w = os.pipe()
    end = Wakeup()
    watchdog = Watchdog(worker)
    watchdog.start(end.fd, wakeup_r)
    return watchdog, (end, wakeup_r, wakeup_w)


def _release(watchdog, fds):
    watchdog.stop()
    end, wakeup_r, wakeup_w = fds
    end.close()
    os.close(wakeup_r)
    os.close(wakeup_w)


def test_an_idle_watchdog_parks_and_the_next_inline_run_wakes_it_in_time_to_take_over():
    worker = _Worker()
    watchdog, fds = _watching(worker)
    try:
        wait_until(lambda: watchdog.parked, "the watchdog parks", timeout=PARK * 20)
        assert worker.passes == 0
        worker._inline_since = time.monotonic()  # as ChildWorker._run_inline does
        assert watchdog.idle
        watchdog.busy()
        assert not watchdog.parked
        wait_until(lambda: worker.passes > 0, "the watchdog takes over the blocked loop's reading")
        assert time.monotonic() - worker._inline_since >= TAKEOVER
        assert worker.steps[:2] == ["uncork", "pass"]  # first the replies the blocked pass kept back
        worker._inline_since = None
        wait_until(lambda: watchdog.parked, "it parks again once nothing runs inline", timeout=PARK * 20)
    finally:
        _release(watchdog, fds)
    assert watchdog._thread is None


def test_a_parked_watchdog_stops_at_once():
    watchdog, fds = _watching(_Worker())
    wait_until(lambda: watchdog.parked, "the watchdog parks", timeout=PARK * 20)
    stopper = threading.Thread(target=_release, args=(watchdog, fds))
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive()


def test_inline_runs_keep_it_from_parking():
    worker = _Worker()
    watchdog, fds = _watching(worker)
    try:
        until = time.monotonic() + PARK * 3
        while time.monotonic() < until:  # quick inline runs, as a busy worker makes them
            if watchdog.idle:
                watchdog.busy()
            assert not watchdog.parked
            time.sleep(TAKEOVER / 2)
    finally:
        _release(watchdog, fds)


def _switches(pid):
    """Voluntary context switches so far of all the threads of process ``pid`` (each one a wake-up)."""
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        with open(f"{task}/status") as f:
            total += sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
    return total


def test_an_idle_worker_does_not_wake(worker_script):
    with ParentWorker.spawn(worker_script, transport="unix", heartbeat_interval=60.0) as worker:
        for n in range(20):
            assert worker.call.add(n, 1) == n + 1  # quick: they run inline
        time.sleep(PARK * 3)  # idle long enough for the watchdog to park
        before = _switches(worker.pid)
        time.sleep(1.0)  # the idle second being counted: a watchdog looking every TAKEOVER would wake ~100 times
        assert _switches(worker.pid) - before <= 10
        assert worker.call.add(2, 2) == 4
