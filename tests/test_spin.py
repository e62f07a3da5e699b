"""Waiting spins a moment before sleeping (multifrost/spin.py): only while spinning pays, never
with one CPU, never on a ZeroMQ end; an idle worker and a caller of a slow method do not spin."""
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import cpu_seconds
from multifrost import ParentWorker
from multifrost.spin import BACKOFF, SPIN, Spinner

HERE = os.path.dirname(os.path.abspath(__file__))
PLAIN = os.path.join(HERE, "workers", "plain_worker.py")
MATH = os.path.join(HERE, "workers", "math_worker.py")  # async methods too: served on asyncio
TWO_CPUS = len(os.sched_getaffinity(0)) > 1


class ScriptedPoll:
    """A ``poll``: ``poll(0)`` answers [] until its ``ready_after``-th call of this wait (None: never);
    a blocking ``poll(ms)`` answers at once. Records the calls."""

    def __init__(self, ready_after=None):
        self.ready_after = ready_after
        self.zero_calls = 0
        self.blocking = []

    def __call__(self, ms):
        if ms != 0:
            self.blocking.append(ms)
            return [(3, 1)]
        self.zero_calls += 1
        if self.ready_after is not None and self.zero_calls >= self.ready_after:
            return [(4, 1)]
        return []


def _spinner():
    spinner = Spinner()
    spinner.enabled = True  # as on a machine with several CPUs, whatever this one has
    return spinner


def test_a_spin_that_catches_a_message_returns_it_without_sleeping():
    poll = ScriptedPoll(ready_after=3)
    assert _spinner().poll(poll, None) == [(4, 1)]
    assert poll.zero_calls == 3 and poll.blocking == []


def test_a_fruitless_spin_lasts_about_spin_then_sleeps_with_the_callers_limit():
    poll = ScriptedPoll()
    started = time.perf_counter()
    assert _spinner().poll(poll, 250) == [(3, 1)]
    assert time.perf_counter() - started >= SPIN
    assert poll.blocking == [250]


def test_a_zero_timeout_and_a_disabled_spinner_poll_once():
    for spinner, ms in ((_spinner(), 0), (Spinner(False), None), (Spinner(False), 7)):
        poll = ScriptedPoll(ready_after=1)
        spinner.poll(poll, ms)
        assert (poll.zero_calls, poll.blocking) == ((1, []) if ms == 0 else (0, [ms]))


@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_fruitless_spins_back_off_and_a_caught_message_resets(catches):
    """``catches``: whether each spin, in turn, catches a message. After the k-th fruitless spin in
    a row, the next min(2**(k-1), BACKOFF) waits sleep at once; after a caught one the next spins."""
    spinner, waits = _spinner(), []  # per wait: what its spin caught, or None when it slept at once
    for catch in catches:
        while True:
            poll = ScriptedPoll(ready_after=1 if catch else None)
            spinner.poll(poll, 5)
            if poll.zero_calls:
                waits.append(catch)
                break
            waits.append(None)
    fruitless, i = 0, 0
    while i < len(waits):
        assert waits[i] is not None, f"wait {i} slept at once where it should have spun: {waits}"
        fruitless = 0 if waits[i] else fruitless + 1
        sleeps = min(2 ** (fruitless - 1), BACKOFF) if fruitless else 0
        following = waits[i + 1:i + 1 + sleeps]
        assert following == [None] * len(following), f"after wait {i}: {waits}"
        i += 1 + sleeps


@pytest.mark.skipif(not TWO_CPUS, reason="this machine has one CPU: there is no two-CPU case to check")
def test_a_process_on_one_cpu_never_spins():
    code = "import os; from multifrost.spin import Spinner; print(Spinner().enabled, end=' ');" \
           "os.sched_setaffinity(0, {0}); print(Spinner().enabled)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_only_ends_without_io_threads_spin():
    with ParentWorker.spawn(PLAIN, transport="unix") as unix, ParentWorker.spawn(PLAIN, transport="tcp") as tcp:
        assert unix._sync.channel.end.spins and unix._sync.channel._spinner.enabled == TWO_CPUS
        assert not tcp._sync.channel.end.spins and not tcp._sync.channel._spinner.enabled
        assert unix.call.spins() == TWO_CPUS and tcp.call.spins() is False  # the workers' PollLoops


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner (a loop factory) is Python 3.11's")
def test_a_worker_with_async_methods_waits_on_a_selector_that_spins_over_unix_only():
    with ParentWorker.spawn(MATH, transport="unix") as unix, ParentWorker.spawn(MATH, transport="tcp") as tcp:
        assert unix.call.waits_by() == ["SpinningSelector", TWO_CPUS]
        assert tcp.call.waits_by() == ["SpinningSelector", False]
        assert unix.call.aadd(1, 2) == tcp.call.aadd(1, 2) == 3


@pytest.mark.parametrize("script", [PLAIN, MATH], ids=["pollloop", "asyncio"])
def test_an_idle_worker_and_a_caller_of_a_slow_method_do_not_spin(script, tmp_path):
    """After a burst of quick calls (spinning pays), a second with no calls costs the worker next
    to no CPU, and a call that takes half a second costs its caller next to none."""
    with ParentWorker.spawn(script, transport="unix") as worker:
        for _ in range(300):
            assert worker.call.add(1, 2) == 3
        before = cpu_seconds(worker.pid)
        time.sleep(1.0)  # the idle second being measured
        assert cpu_seconds(worker.pid) - before < 0.2
        for _ in range(300):
            worker.call.add(1, 2)
        before = time.process_time()
        worker.call.hold(str(tmp_path / "held"), 0.5)
        assert time.process_time() - before < 0.2
