"""SyncChannel's outbox: a caller never sleeps on the end's lock, and what it leaves there is sent."""
import threading
import uuid
from collections import deque

import pytest

from helpers import wait_until
from multifrost import protocol
from multifrost.channel_sync import SyncChannel
from multifrost.channel_waiters import Followers, Waiter
from multifrost.codec import pack_message
from multifrost.errors import CallTimeoutError, WorkerCrashedError
from multifrost.transports import open_child_end, open_parent_end


@pytest.fixture(params=["memory", "unix", "tcp"])
def ends(request, tmp_path):
    url = {"memory": f"memory://{uuid.uuid4().hex}", "unix": f"unix://{tmp_path}/c.sock",
           "tcp": "tcp://127.0.0.1:0"}[request.param]
    parent = open_parent_end(url, bind=True)
    child = open_child_end(parent.endpoint, bind=False)
    yield parent, child
    child.close()
    parent.close()


def _call(name: str) -> tuple[str, bytes]:
    message = protocol.call(name, [])
    return message["id"], pack_message(message)


def _receive(child, channel) -> bytes:
    """What the child gets next, the channel retrying a send refused while tcp still connects."""
    for _ in range(100):
        try:
            return child.recv_blocking(0.05)[1]
        except TimeoutError:
            channel.drain()
    raise AssertionError("nothing arrived")


def test_a_request_made_while_another_thread_holds_the_end_leaves_when_it_lets_go(ends):
    parent, child = ends
    channel = SyncChannel(parent, lambda message: None)
    channel._io.acquire()  # as the leader does in the middle of a pass
    msg_id, payload = _call("held")
    submitted = threading.Thread(target=channel.submit, args=(msg_id, payload))
    submitted.start()
    submitted.join(5)
    assert not submitted.is_alive()  # the caller did not wait for the end
    channel._io.release()
    channel._flush()  # what the holder does once it lets go
    assert protocol.decode(_receive(child, channel)).id == msg_id
    channel.close()


def test_threads_calling_at_once_each_get_their_own_reply(ends):
    parent, child = ends
    channel = SyncChannel(parent, lambda message: None)

    def answer(count):
        for _ in range(count):
            peer, payload = child.recv_blocking(10)
            message = protocol.decode(payload)
            child.send_blocking(peer, pack_message(protocol.response(message.id, message.raw["function"])))

    threads, calls = 8, 50
    answerer = threading.Thread(target=answer, args=(threads * calls,))
    answerer.start()
    wrong = []

    def caller(number):
        for n in range(calls):
            name = f"f{number}_{n}"
            msg_id, payload = _call(name)
            if channel.request(msg_id, payload, 10, name).result != name:
                wrong.append(name)

    callers = [threading.Thread(target=caller, args=(number,)) for number in range(threads)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(30)
    answerer.join(10)
    assert not wrong and channel.in_flight == 0
    channel.close()


def test_a_finalizers_message_is_sent_by_the_next_pass(ends):
    parent, child = ends
    channel = SyncChannel(parent, lambda message: None)
    _, payload = _call("cancel-me")
    channel.post_soon("a-stream", payload)
    assert _receive(child, channel) == payload
    channel.close()


class _Caller(threading.Thread):
    """One blocking request in a thread of its own; ``outcome`` is its reply's result or the error it raised."""

    def __init__(self, channel, name, timeout=10):
        super().__init__()
        self.channel, self.name, self.timeout = channel, name, timeout
        self.msg_id, self.payload = _call(name)
        self.outcome = None

    def run(self):
        try:
            self.outcome = self.channel.request(self.msg_id, self.payload, self.timeout, self.name).result
        except BaseException as exc:  # a test's stand-in for a Ctrl-C too
            self.outcome = exc


def _answer(child, payload_of, result):
    """Answer the call that arrived as ``payload_of`` = (peer, payload) with ``result``."""
    peer, payload = payload_of
    child.send_blocking(peer, pack_message(protocol.response(protocol.decode(payload).id, result)))


def _leader_and_follower(parent, child):
    """A caller that leads (it registered while nobody led) and one that follows (sleeping on its lock)."""
    channel = SyncChannel(parent, lambda message: None)
    leader = _Caller(channel, "leader")
    leader.start()
    first = child.recv_blocking(10)
    wait_until(lambda: channel._leader is not None, "the first caller leads")
    follower = _Caller(channel, "follower")
    follower.start()
    second = child.recv_blocking(10)  # a caller that finds the lead taken still sends at once
    wait_until(lambda: follower.msg_id in channel._pending and channel._followers, "the second caller sleeps")
    return channel, leader, first, follower, second


def test_a_caller_that_finds_the_lead_taken_follows_and_takes_the_lead_when_the_leader_is_done(ends):
    parent, child = ends
    channel, leader, first, follower, second = _leader_and_follower(parent, child)
    _answer(child, first, "a")
    leader.join(10)
    assert leader.outcome == "a" and follower.is_alive()
    wait_until(lambda: channel._leader is not None and not channel._followers, "the lead passed to the follower")
    _answer(child, second, "b")  # read by the follower, now the leader
    follower.join(10)
    assert follower.outcome == "b" and channel._leader is None and channel.in_flight == 0
    channel.close()


def test_the_leader_hands_a_followers_reply_to_it_while_it_keeps_waiting_for_its_own(ends):
    parent, child = ends
    channel, leader, first, follower, second = _leader_and_follower(parent, child)
    _answer(child, second, "b")
    follower.join(10)
    assert follower.outcome == "b" and leader.is_alive()
    _answer(child, first, "a")
    leader.join(10)
    assert leader.outcome == "a" and channel.in_flight == 0
    channel.close()


def test_a_failure_while_calls_wait_fails_the_leader_and_the_follower_at_once(ends):
    parent, child = ends
    channel, leader, _, follower, _ = _leader_and_follower(parent, child)
    channel.fail_all(WorkerCrashedError("the worker died"))
    leader.join(10)
    follower.join(10)
    assert isinstance(leader.outcome, WorkerCrashedError) and isinstance(follower.outcome, WorkerCrashedError)
    assert channel._leader is None
    channel.close()


def test_a_leader_whose_time_is_up_passes_the_lead_on_and_a_late_reply_is_dropped(ends):
    parent, child = ends
    channel = SyncChannel(parent, lambda message: None)
    late = _Caller(channel, "late", timeout=0.05)
    late.start()
    first = child.recv_blocking(10)
    late.join(10)
    assert isinstance(late.outcome, CallTimeoutError) and channel.in_flight == 0 and channel._leader is None
    _answer(child, first, "too late")
    again = _Caller(channel, "again")
    again.start()
    _answer(child, child.recv_blocking(10), "b")
    again.join(10)
    assert again.outcome == "b"
    channel.close()


def test_a_waiter_makes_its_wake_up_lock_only_when_it_first_sleeps():
    waiter = Waiter()
    assert waiter.wake is None
    wake = waiter.sleep()
    assert waiter.sleeping and wake.locked() and waiter.sleep() is wake


class _Interrupt(BaseException):
    """Stands for a Ctrl-C (KeyboardInterrupt) landing at a chosen point of a call."""


class _InterruptingOutbox(deque):
    def append(self, item):
        raise _Interrupt()


def _answering(child, count):
    """A thread answering ``count`` calls with their function names."""
    def answer():
        for _ in range(count):
            peer, payload = child.recv_blocking(10)
            message = protocol.decode(payload)
            child.send_blocking(peer, pack_message(protocol.response(message.id, message.raw["function"])))
    thread = threading.Thread(target=answer)
    thread.start()
    return thread


def test_a_ctrl_c_right_after_a_caller_took_the_lead_leaves_the_lead_free(ends, monkeypatch):
    parent, child = ends
    channel = SyncChannel(parent, lambda message: None)
    msg_id, payload = _call("interrupted")
    with monkeypatch.context() as patch:  # lands after _register took the lead, before leading began
        patch.setattr(channel, "_outbox", _InterruptingOutbox())
        with pytest.raises(_Interrupt):
            channel.request(msg_id, payload, 5, "interrupted")
    assert channel._leader is None and channel.in_flight == 0
    answerer = _answering(child, 1)
    msg_id, payload = _call("next")
    assert channel.request(msg_id, payload, 5, "next").result == "next"  # it leads: nobody else would read
    answerer.join(10)
    channel.close()


def test_a_ctrl_c_right_after_a_follower_was_handed_the_lead_leaves_the_lead_free(ends, monkeypatch):
    parent, child = ends
    channel, leader, first, follower, second = _leader_and_follower(parent, child)
    run_lead = channel._run_lead

    def interrupted(waiter, deadline, what):  # the follower, promoted, is stopped before it leads
        if what == "follower":
            raise _Interrupt()
        return run_lead(waiter, deadline, what)
    monkeypatch.setattr(channel, "_run_lead", interrupted)
    _answer(child, first, "a")  # the leader is done and hands the lead to the follower
    leader.join(10)
    follower.join(10)
    assert leader.outcome == "a" and isinstance(follower.outcome, _Interrupt)
    assert channel._leader is None and channel.in_flight == 0
    answerer = _answering(child, 1)
    msg_id, payload = _call("next")
    assert channel.request(msg_id, payload, 5, "next").result == "next"
    answerer.join(10)
    channel.close()


def test_a_ctrl_c_while_a_follower_sleeps_gives_up_its_place(ends, monkeypatch):
    parent, child = ends
    sleep = Waiter.sleep

    class Cut:  # the follower's wake-up lock, as a Ctrl-C interrupts its wait
        def __init__(self, lock):
            self.lock = lock

        def acquire(self, timeout=-1):
            raise _Interrupt()
    monkeypatch.setattr(Waiter, "sleep", lambda self: Cut(sleep(self)))
    channel = SyncChannel(parent, lambda message: None)
    leader = _Caller(channel, "leader")
    leader.start()
    first = child.recv_blocking(10)
    follower = _Caller(channel, "follower")
    follower.start()
    follower.join(10)
    assert isinstance(follower.outcome, _Interrupt)
    assert not channel._followers  # the lead will never be handed to a caller that left
    _answer(child, first, "a")
    leader.join(10)
    assert leader.outcome == "a" and channel._leader is None and channel.in_flight == 0
    channel.close()


def _woken(locks):
    return [not lock.locked() for lock in locks]


def _asleep_with_replies(count):
    """``count`` followers asleep whose replies one pass brought in: only the first is woken."""
    followers = Followers()
    waiters = [Waiter() for _ in range(count)]
    locks = [followers.add(waiter) for waiter in waiters]
    for waiter in waiters:
        waiter.done = True
        followers.wake(waiter)
    return followers, waiters, locks


def test_followers_whose_replies_came_in_one_pass_are_woken_one_after_another():
    followers, waiters, locks = _asleep_with_replies(3)
    assert _woken(locks) == [True, False, False]
    followers.pass_on(waiters[0])  # the first woken caller leaves: it wakes the next
    assert _woken(locks) == [True, True, False]
    followers.pass_on(waiters[1])
    followers.pass_on(waiters[2])
    assert _woken(locks) == [True, True, True]
    late = Waiter()
    lock = followers.add(late)
    followers.wake(late)  # the relay has run its course: a reply that comes now wakes its caller at once
    assert not lock.locked()


def test_a_follower_that_leaves_before_its_turn_in_the_relay_is_skipped():
    followers, waiters, locks = _asleep_with_replies(3)
    followers.pass_on(waiters[1])  # a Ctrl-C while it waited for its turn
    followers.pass_on(waiters[0])
    assert _woken(locks) == [True, False, True]


def test_a_failure_wakes_every_follower_still_waiting_for_its_turn_at_once():
    followers, _, locks = _asleep_with_replies(3)
    followers.wake_queued()
    assert _woken(locks) == [True, True, True]


def _relay_held(ends, monkeypatch, interrupt):
    """A leader and two followers, "first" and "second"; once woken, "first" holds the relay of
    replies until ``go`` is set, then leaves (``interrupt``: with a stand-in for a Ctrl-C)."""
    parent, child = ends
    sleep, go = Waiter.sleep, threading.Event()

    class Held:  # the first follower's wake-up
        def __init__(self, lock):
            self.lock = lock

        def acquire(self, timeout=-1):
            got = self.lock.acquire(timeout=timeout)
            if got and threading.current_thread().name == "first":
                go.wait(10)
                if interrupt:
                    raise _Interrupt()
            return got
    monkeypatch.setattr(Waiter, "sleep", lambda self: Held(sleep(self)))
    channel = SyncChannel(parent, lambda message: None)
    callers = []
    for name, asleep in (("leader", 0), ("first", 1), ("second", 2)):
        caller = _Caller(channel, name)
        caller.start()
        callers.append((caller, child.recv_blocking(10)))
        wait_until(lambda: len(channel._followers._asleep) == asleep, f"{name} leads or sleeps as a follower")
    _answer(child, callers[1][1], "a")
    wait_until(lambda: callers[1][0].msg_id not in channel._pending, "the first follower's reply is handed out")
    return channel, go, callers


def test_a_ctrl_c_in_a_follower_woken_with_its_reply_still_wakes_the_next(ends, monkeypatch):
    channel, go, callers = _relay_held(ends, monkeypatch, interrupt=True)
    child = ends[1]
    (leader, to_leader), (first, _), (second, to_second) = callers
    _answer(child, to_second, "b")  # its turn comes after the first follower's
    wait_until(lambda: channel.in_flight == 1, "the second follower's reply is handed out")
    assert second.is_alive()
    go.set()
    first.join(10)
    second.join(10)
    assert isinstance(first.outcome, _Interrupt) and second.outcome == "b"
    _answer(child, to_leader, "c")
    leader.join(10)
    assert leader.outcome == "c" and channel._leader is None and channel.in_flight == 0
    channel.close()


def test_a_leader_done_while_a_relay_runs_wakes_nobody_and_the_relays_last_caller_finds_a_new_leader(
        ends, monkeypatch):
    channel, go, callers = _relay_held(ends, monkeypatch, interrupt=False)
    child = ends[1]
    (leader, to_leader), (first, _), (second, to_second) = callers
    _answer(child, to_leader, "c")
    leader.join(10)
    assert leader.outcome == "c" and channel._leader is None
    assert channel._followers  # the second still sleeps: a caller of the relay calling again would lead
    go.set()
    first.join(10)  # the relay's last caller: nobody took the lead, so it wakes the second to lead
    assert first.outcome == "a"
    wait_until(lambda: channel._leader is not None, "the second follower leads")
    _answer(child, to_second, "b")
    second.join(10)
    assert second.outcome == "b" and channel._leader is None and channel.in_flight == 0
    channel.close()
