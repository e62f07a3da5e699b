"""child_loop.PollLoop, the loop a worker without async methods is served on."""
import logging
import os
import signal
import threading

import pytest

from multifrost.child_loop import PollLoop

LIVENESS = 30.0  # seconds: a generous bound for what should happen at once


@pytest.fixture
def loop():
    loop = PollLoop()
    yield loop
    loop.close()


def test_timers_run_in_order_of_their_time_and_a_cancelled_one_never(loop):
    ran = []
    loop.call_later(0.03, ran.append, "third")
    loop.call_later(0.01, ran.append, "first")
    loop.call_later(0.02, ran.append, "second-a")
    loop.call_later(0.02, ran.append, "second-b")  # the same time: the order they were set
    loop.call_later(0.015, ran.append, "cancelled").cancel()
    loop.call_later(0.04, ran.append, "last")
    loop.run_until(lambda: "last" in ran, timeout=LIVENESS)
    assert ran == ["first", "second-a", "second-b", "third", "last"]


def test_call_soon_runs_in_order_and_what_it_adds_waits_for_the_next_step(loop):
    ran = []

    def first():
        ran.append("first")
        loop.call_soon(ran.append, "added")
    loop.call_soon(first)
    loop.call_soon(ran.append, "second")
    loop.run_until(lambda: "added" in ran, timeout=LIVENESS)
    assert ran == ["first", "second", "added"]


def test_call_soon_threadsafe_wakes_a_loop_blocked_in_poll(loop):
    ran = threading.Event()
    ident = []

    def from_thread():
        loop.call_soon_threadsafe(lambda: ident.append(threading.get_ident()) or ran.set())
    thread = threading.Thread(target=from_thread)
    loop.call_soon(thread.start)  # the loop then blocks in poll (no timer, nothing ready)
    loop.run_until(ran.is_set, timeout=LIVENESS)
    thread.join()
    assert ran.is_set() and ident == [threading.get_ident()]  # ran on the loop's thread


def test_a_reader_runs_while_its_descriptor_is_readable_and_not_after_removal(loop):
    r, w = os.pipe()
    try:
        seen = []

        def read():
            seen.append(os.read(r, 100))
        loop.add_reader(r, read)
        os.write(w, b"one")
        loop.run_until(lambda: seen, timeout=LIVENESS)
        assert loop.remove_reader(r) and not loop.remove_reader(r)
        os.write(w, b"two")
        loop.call_later(0.05, seen.append, "timer")
        loop.run_until(lambda: "timer" in seen, timeout=LIVENESS)
        assert seen == [b"one", "timer"]
    finally:
        os.close(r)
        os.close(w)


def test_a_reader_removed_by_another_callback_of_the_same_step_does_not_run(loop):
    pipes = [os.pipe(), os.pipe()]
    try:
        ran = []

        def reader(mine, other):
            def callback():
                ran.append(mine)
                os.read(mine, 1)
                loop.remove_reader(other)
            return callback
        (r1, w1), (r2, w2) = pipes
        loop.add_reader(r1, reader(r1, r2))
        loop.add_reader(r2, reader(r2, r1))
        os.write(w1, b"x")
        os.write(w2, b"x")  # both readable for the same poll
        loop.run_until(lambda: ran, timeout=LIVENESS)
        assert len(ran) == 1  # whichever ran first removed the other
        left = ran[0]
        loop.call_later(0.05, ran.append, "timer")
        loop.run_until(lambda: "timer" in ran, timeout=LIVENESS)
        assert ran == [left, "timer"]  # the other never ran, though its pipe is still readable
        assert loop.remove_reader(left) and not loop.remove_reader(r1 if left == r2 else r2)
    finally:
        for fd in (fd for pair in pipes for fd in pair):
            os.close(fd)


def test_a_callback_that_raises_is_logged_and_the_loop_goes_on(loop, caplog):
    ran = []

    def broken():
        raise RuntimeError("broken callback")
    loop.call_soon(broken)
    loop.call_later(0.01, broken)
    loop.call_soon(ran.append, "after")
    loop.call_later(0.02, ran.append, "timer after")
    with caplog.at_level(logging.ERROR, logger="multifrost.child_loop"):
        loop.run_until(lambda: "timer after" in ran, timeout=LIVENESS)
    assert ran == ["after", "timer after"]
    assert [r.exc_info[1].args[0] for r in caplog.records] == ["broken callback"] * 2


def test_run_until_returns_when_its_timeout_passes(loop):
    loop.run_until(lambda: False, timeout=0.05)


def test_a_signal_runs_its_handler_on_the_loop_and_the_old_handler_comes_back(loop):
    before = signal.getsignal(signal.SIGUSR1)
    old_wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(old_wakeup)
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: got.append(threading.get_ident()))
    try:
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        loop.run_until(lambda: got, timeout=LIVENESS)
        assert got == [threading.get_ident()]
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) is before
    assert signal.set_wakeup_fd(old_wakeup) == old_wakeup  # the wake-up fd it had before, too


def test_a_closed_loop_refuses_calls_from_other_threads():
    loop = PollLoop()
    assert not loop.is_closed()
    loop.close()
    loop.close()  # idempotent
    assert loop.is_closed()
    with pytest.raises(RuntimeError):
        loop.call_soon_threadsafe(print)
