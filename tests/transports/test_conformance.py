"""Behaviour every transport backend must share (tcp, ipc, inproc, memory, unix)."""
from __future__ import annotations

import asyncio
import itertools
import re
import select
import threading
import time

import pytest

from multifrost.codec import Pieces
from multifrost.errors import TransportClosed, TransportError

DEADLINE = 20.0  # generous liveness bound for anything that should take milliseconds


def wait_until(condition, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.001)


def wait_fds(*ends, timeout: float = 0.05) -> None:
    """Block until one end's descriptor is readable or a short while passes."""
    poller = select.poll()
    for end in ends:
        poller.register(end.fileno(), select.POLLIN)
    poller.poll(timeout * 1000)


def test_roundtrip_in_order(ends):
    parent, child = ends.pair()
    count = 500
    for i in range(count):
        parent.send_blocking(b"%d" % i, timeout=DEADLINE)
    peers = set()
    for i in range(count):
        peer, payload = child.recv_blocking(timeout=DEADLINE)
        assert payload == b"%d" % i
        peers.add(peer)
        child.send_blocking(peer, b"r%d" % i, timeout=DEADLINE)
    assert len(peers) == 1 and child.peers == frozenset(peers)
    for i in range(count):
        assert parent.recv_blocking(timeout=DEADLINE) == b"r%d" % i
    assert parent.recv_nowait() is None and child.recv_nowait() is None


def test_several_parents_each_get_their_own_replies(ends):
    child = ends.child(ends.address(), bind=True)
    parents = [ends.parent(child.endpoint, bind=False) for _ in range(3)]
    per_parent = 50
    for i in range(per_parent):
        for n, parent in enumerate(parents):
            parent.send_blocking(b"%d:%d" % (n, i), timeout=DEADLINE)
    seen: dict[int, bytes] = {}
    for _ in range(per_parent * len(parents)):
        peer, payload = child.recv_blocking(timeout=DEADLINE)
        n = int(payload.split(b":")[0])
        assert seen.setdefault(n, peer) == peer, "one parent arrived with two identities"
        child.send_blocking(peer, b"echo " + payload, timeout=DEADLINE)
    assert len(set(seen.values())) == len(parents)
    assert child.peers == frozenset(seen.values())
    for n, parent in enumerate(parents):
        got = [parent.recv_blocking(timeout=DEADLINE) for _ in range(per_parent)]
        assert got == [b"echo %d:%d" % (n, i) for i in range(per_parent)]
        assert parent.recv_nowait() is None


@pytest.mark.parametrize("size", [0, 1, 100_000, 64 * 1024 * 1024])
def test_frame_sizes(ends, size):
    parent, child = ends.pair()
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    parent.send_blocking(payload, timeout=DEADLINE)
    peer, got = child.recv_blocking(timeout=DEADLINE)
    assert type(got) is bytes and got == payload
    child.send_blocking(peer, got, timeout=DEADLINE)
    back = parent.recv_blocking(timeout=DEADLINE)
    assert type(back) is bytes and back == payload


@pytest.mark.parametrize("size", [100_000, 24 * 1024 * 1024])  # the larger is more than a unix socket takes at once
def test_pieces_arrive_as_the_bytes_they_join_to(ends, size):
    """Every end takes a message packed as Pieces (codec ``gather``): written part by part by an end
    that gathers, joined by the others; the peer receives the joined bytes, in order with the rest."""
    parent, child = ends.pair()
    big = bytes(range(256)) * (size // 256)
    parts = [b"head", big, b"", big[:1000], b"tail"]
    pieces = Pieces(parts, sum(map(len, parts)))
    parent.send_blocking(b"before", timeout=DEADLINE)
    parent.send_blocking(pieces, timeout=DEADLINE)
    parent.send_blocking(b"after", timeout=DEADLINE)
    got = [child.recv_blocking(timeout=DEADLINE) for _ in range(3)]
    assert [payload for _, payload in got] == [b"before", bytes(pieces), b"after"]
    assert type(got[1][1]) is bytes
    peer = got[0][0]
    child.send_blocking(peer, pieces, timeout=DEADLINE)
    child.send_blocking(peer, b"last", timeout=DEADLINE)
    assert parent.recv_blocking(timeout=DEADLINE) == bytes(pieces)
    assert parent.recv_blocking(timeout=DEADLINE) == b"last"


def test_100k_messages_pipelined_none_lost_or_duplicated(ends):
    parent, child = ends.pair()
    total, window = 100_000, 256
    sent = received = 0
    deadline = time.monotonic() + 60
    while received < total:
        assert time.monotonic() < deadline, f"stalled at {received} of {total}"
        progress = False
        while sent < total and sent - received < window and parent.send_nowait(sent.to_bytes(4, "big")):
            sent += 1
            progress = True
        while (item := child.recv_nowait()) is not None:
            peer, payload = item
            assert child.send_nowait(peer, payload)
            progress = True
        while (payload := parent.recv_nowait()) is not None:
            assert int.from_bytes(payload, "big") == received
            received += 1
            progress = True
        if not progress:
            wait_fds(parent, child)
    assert parent.recv_nowait() is None and child.recv_nowait() is None


@pytest.mark.parametrize("side", ["parent", "child"])
def test_close_wakes_a_blocking_receive(ends, side):
    parent, child = ends.pair()
    end = parent if side == "parent" else child
    outcome = []

    def receive():
        started = time.monotonic()
        try:
            end.recv_blocking()
        except TransportClosed:
            outcome.append(time.monotonic() - started)

    thread = threading.Thread(target=receive)
    thread.start()
    wait_until(lambda: end._blocking_waiters == 1)
    end.close()
    thread.join(DEADLINE)
    assert not thread.is_alive() and len(outcome) == 1
    with pytest.raises(TransportClosed):
        end.recv_nowait()
    end.close()  # idempotent


@pytest.mark.parametrize("closer", ["same loop", "other thread"])
def test_close_wakes_an_async_receive(ends, closer):
    parent, child = ends.pair()

    async def main():
        waiter = asyncio.ensure_future(parent.recv())
        while not parent._async_waiters:
            await asyncio.sleep(0)
        if closer == "same loop":
            parent.close()
        else:
            thread = threading.Thread(target=parent.close)
            thread.start()
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        with pytest.raises(TransportClosed):
            await asyncio.wait_for(waiter, DEADLINE)

    asyncio.run(main())
    assert parent.closed
    with pytest.raises(TransportClosed):
        parent.send_nowait(b"x")


def test_closed_end_refuses_everything(ends):
    parent, child = ends.pair()
    for end in (parent, child):
        end.close()
        assert end.closed
        with pytest.raises(TransportClosed):
            end.fileno()
        with pytest.raises(TransportClosed):
            end.recv_nowait()
        with pytest.raises(TransportClosed):
            end.recv_blocking(timeout=1)
    with pytest.raises(TransportClosed):
        parent.send_nowait(b"x")
    with pytest.raises(TransportClosed):
        child.send_nowait(b"peer", b"x")


def test_send_to_unknown_peer_raises(ends):
    parent, child = ends.pair()
    with pytest.raises(TransportError, match="unknown peer"):
        child.send_nowait(b"\x00nobody", b"x")
    parent.send_blocking(b"hi", timeout=DEADLINE)
    peer, _ = child.recv_blocking(timeout=DEADLINE)
    parent.close()
    # The peer is gone: the send fails loudly (at once for memory, once ZeroMQ notices).
    def refused() -> bool:
        try:
            child.send_nowait(peer, b"x")
        except TransportError:
            return True
        return False

    wait_until(refused)
    assert peer not in child.peers


def test_send_all_reaches_every_peer(ends):
    child = ends.child(ends.address(), bind=True)
    parents = [ends.parent(child.endpoint, bind=False) for _ in range(3)]
    for parent in parents:
        parent.send_blocking(b"hello", timeout=DEADLINE)
    for _ in parents:
        child.recv_blocking(timeout=DEADLINE)
    assert len(child.peers) == 3
    assert child.send_all(b"news") == 3
    for parent in parents:
        assert parent.recv_blocking(timeout=DEADLINE) == b"news"


def test_bound_parent_cannot_send_until_a_child_connects(ends):
    parent = ends.parent(ends.address(), bind=True)
    assert parent.send_nowait(b"early") is False
    child = ends.child(parent.endpoint, bind=False)
    parent.send_blocking(b"first", timeout=DEADLINE)
    peer, payload = child.recv_blocking(timeout=DEADLINE)
    assert payload == b"first"
    child.send_blocking(peer, b"reply", timeout=DEADLINE)
    assert parent.recv_blocking(timeout=DEADLINE) == b"reply"


def fill(send) -> int:
    """Call a waiting ``send`` until it times out; returns how many it accepted."""
    accepted = 0
    while True:
        try:
            send()
        except TimeoutError:
            return accepted
        accepted += 1
        assert accepted < 5000, "sends never refused: no backpressure"


def test_backpressure_parent(ends):
    parent, child = ends.pair(sndhwm=4, rcvhwm=4)
    payload = b"p" * 65536
    # Fill until a waiting send times out (ZeroMQ also fills kernel buffers, in the background).
    accepted = fill(lambda: parent.send_blocking(payload, timeout=0.2))
    assert accepted >= 4
    assert parent.send_nowait(payload) is False

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticking = asyncio.ensure_future(ticker())
        more = 0  # TCP buffers may still grow: wait until a send really times out
        while True:
            ticks_before = ticks
            try:
                await parent.send(payload, timeout=0.3)
            except TimeoutError:
                break
            more += 1
            assert more < 5000
        assert ticks - ticks_before > 5, "the awaiting send blocked the event loop"
        sending = asyncio.ensure_future(parent.send(b"last", timeout=DEADLINE))
        drained = []
        while not sending.done() or not drained or drained[-1] != b"last":
            item = child.recv_nowait()
            if item is None:
                await asyncio.sleep(0.001)
            else:
                drained.append(item[1])
        await sending
        ticking.cancel()
        return drained, more

    drained, more = asyncio.run(main())
    assert drained[-1] == b"last"
    assert len(drained) == accepted + more + 1  # nothing queued by the refused or timed-out sends


def test_backpressure_child(ends):
    parent, child = ends.pair(sndhwm=4, rcvhwm=4)
    parent.send_blocking(b"hi", timeout=DEADLINE)
    peer, _ = child.recv_blocking(timeout=DEADLINE)
    payload = b"c" * 65536
    accepted = fill(lambda: child.send_blocking(peer, payload, timeout=0.2))
    assert child.send_nowait(peer, payload) is False
    result = []
    sender = threading.Thread(target=lambda: result.append(child.send_blocking(peer, b"last", timeout=DEADLINE)))
    sender.start()
    got = []
    while not got or got[-1] != b"last":
        got.append(parent.recv_blocking(timeout=DEADLINE))
    sender.join(DEADLINE)
    assert result == [None] and len(got) == accepted + 1


def test_writable_reports_room_after_a_refused_send(ends):
    parent, child = ends.pair(sndhwm=2, rcvhwm=2)
    payload = b"w" * 65536
    accepted = fill(lambda: parent.send_blocking(payload, timeout=0.2))
    assert parent.send_nowait(payload) is False
    assert parent.recv_nowait() is None
    assert parent.writable is False
    for _ in range(accepted):
        child.recv_blocking(timeout=DEADLINE)

    def room() -> bool:
        if parent.recv_nowait() is None and parent.writable:
            return True
        wait_fds(parent)
        return False

    wait_until(room)
    assert parent.send_nowait(b"after")


@pytest.mark.parametrize("backend", ["tcp", "ipc", "memory", "unix"])  # ZeroMQ inproc connections do not reconnect
def test_reconnect_after_the_bound_child_restarts(ends):
    child = ends.child(ends.address(), bind=True)
    endpoint = child.endpoint
    parent = ends.parent(endpoint, bind=False)
    parent.send_blocking(b"before", timeout=DEADLINE)
    assert child.recv_blocking(timeout=DEADLINE)[1] == b"before"
    child.close()
    child = ends.child(endpoint, bind=True)
    assert child.endpoint == endpoint
    # A message sent while ZeroMQ has not yet noticed the old connection died can be lost
    # with it; once the parent has reconnected, its messages arrive.
    deadline = time.monotonic() + DEADLINE
    for attempt in itertools.count():
        assert time.monotonic() < deadline, "the parent never reached the new child"
        parent.send_blocking(b"after %d" % attempt, timeout=DEADLINE)
        try:
            peer, payload = child.recv_blocking(timeout=0.2)
            break
        except TimeoutError:
            continue
    assert payload.startswith(b"after ")
    parent.send_blocking(b"next", timeout=DEADLINE)
    while payload != b"next":
        peer, payload = child.recv_blocking(timeout=DEADLINE)
    child.send_blocking(peer, b"welcome back", timeout=DEADLINE)
    assert parent.recv_blocking(timeout=DEADLINE) == b"welcome back"


@pytest.mark.parametrize("backend", ["tcp"])
def test_tcp_port_zero_reports_the_real_port(ends):
    child = ends.child("tcp://127.0.0.1:0", bind=True)
    match = re.fullmatch(r"tcp://127\.0\.0\.1:(\d+)", child.endpoint)
    assert match and 0 < int(match.group(1)) <= 65535
    parent = ends.parent(f"tcp://localhost:{match.group(1)}", bind=False)
    parent.send_blocking(b"found you", timeout=DEADLINE)
    assert child.recv_blocking(timeout=DEADLINE)[1] == b"found you"


@pytest.mark.parametrize("backend", ["tcp", "ipc", "memory", "unix"])  # ZeroMQ does not enforce MAXMSGSIZE on inproc
def test_oversized_message_is_not_delivered_and_the_next_one_is(ends):
    child = ends.child(ends.address(), bind=True, max_message_size=1000)
    parent = ends.parent(child.endpoint, bind=False)
    parent.send_blocking(b"small", timeout=DEADLINE)
    assert child.recv_blocking(timeout=DEADLINE)[1] == b"small"
    parent.send_blocking(b"B" * 5000, timeout=DEADLINE)
    # ZeroMQ drops the connection (it reconnects); keep offering until something arrives.
    deadline = time.monotonic() + DEADLINE
    while True:
        assert time.monotonic() < deadline
        parent.send_blocking(b"next", timeout=DEADLINE)
        try:
            peer, payload = child.recv_blocking(timeout=0.2)
            break
        except TimeoutError:
            continue
    assert payload == b"next"


def test_end_used_across_threads_with_an_event_loop(ends):
    """Parent in this thread (blocking), child echoing on an event loop in another thread."""
    parent, child = ends.pair()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def echo():
        while True:
            receiving = asyncio.ensure_future(child.recv())
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
                return
            stopping.cancel()
            peer, payload = receiving.result()
            await child.send(peer, payload)

    thread = threading.Thread(target=lambda: loop.run_until_complete(echo()))
    thread.start()
    try:
        for i in range(300):
            parent.send_blocking(b"%d" % i, timeout=DEADLINE)
            assert parent.recv_blocking(timeout=DEADLINE) == b"%d" % i
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(DEADLINE)
        loop.close()
    assert not thread.is_alive()


def test_recv_all_takes_everything_ready_in_order(ends):
    parent, child = ends.pair()
    assert child.recv_all() == []
    for i in range(50):
        parent.send_blocking(b"%d" % i, timeout=DEADLINE)
    got: list = []
    wait_until(lambda: got.extend(child.recv_all()) or len(got) >= 50)
    assert [payload for _, payload in got] == [b"%d" % i for i in range(50)]
    assert len({peer for peer, _ in got}) == 1 and child.recv_all() == []


def test_parent_recv_all_takes_everything_ready_in_order(ends):
    parent, child = ends.pair()
    assert parent.recv_all() == []
    parent.send_blocking(b"hello", timeout=DEADLINE)
    peer, _ = child.recv_blocking(timeout=DEADLINE)
    for i in range(50):
        child.send_blocking(peer, b"%d" % i, timeout=DEADLINE)
    got: list = []
    wait_until(lambda: got.extend(parent.recv_all()) or len(got) >= 50)
    assert got == [b"%d" % i for i in range(50)] and parent.recv_all() == []


def _readable(end) -> bool:
    return bool(select.select([end.fileno()], [], [], 0)[0])


def _send_while_a_message_waits(receiver, send, soon: bool = False) -> bool:
    """Send from ``receiver`` while a message is on its way to it (or there already): the
    message is announced afterwards, by ``fileno()`` or by the reader callback (``set_reader``),
    never swallowed by the send. (Without the end's rule a ZeroMQ end stays silent for ever.)
    ``soon``: the reader gave ``set_reader`` a ``soon``; what the end put off runs after the send."""
    woken: list = []
    put_off: list = []
    receiver.set_reader(lambda: woken.append(True), put_off.append if soon else None)
    wait_until(lambda: _readable(receiver))
    send()
    for fn in put_off:
        fn()
    wait_until(lambda: bool(woken) or _readable(receiver), timeout=5)
    return True


def test_a_child_send_never_hides_a_waiting_message(ends):
    """The readiness rule lives in the end: after a send, a waiting message is announced."""
    parent, child = ends.pair()
    parent.send_blocking(b"hello", timeout=DEADLINE)
    peer, _ = child.recv_blocking(timeout=DEADLINE)
    assert child.recv_all() == []
    for i in range(20):
        assert parent.send_nowait(b"m%d" % i)
        assert _send_while_a_message_waits(child, lambda: child.send_nowait(peer, b"r%d" % i))
        assert child.recv_all() == [(peer, b"m%d" % i)]
    child.set_reader(None)


@pytest.mark.parametrize("soon", [False, True], ids=["at-once", "soon"])
def test_a_parent_send_never_hides_a_waiting_reply(ends, soon):
    parent, child = ends.pair()
    parent.send_blocking(b"hello", timeout=DEADLINE)
    peer, _ = child.recv_blocking(timeout=DEADLINE)
    assert parent.recv_all() == []  # a reader that drained: from here fileno() announces arrivals
    sent = 0
    for i in range(20):
        assert child.send_nowait(peer, b"r%d" % i)
        assert _send_while_a_message_waits(parent, lambda: parent.send_nowait(b"m%d" % i), soon)
        assert parent.recv_all() == [b"r%d" % i]
        sent += 1
    got: list = []
    wait_until(lambda: got.extend(child.recv_all()) or len(got) >= sent)
    assert [payload for _, payload in got] == [b"m%d" % i for i in range(sent)]


def test_a_refused_send_never_hides_a_waiting_reply(ends):
    """A send refused at the high-water mark looks at the end too; a reply waiting stays announced."""
    parent, child = ends.pair(sndhwm=4, rcvhwm=4)
    parent.send_blocking(b"hello", timeout=DEADLINE)
    peer, _ = child.recv_blocking(timeout=DEADLINE)
    assert parent.recv_all() == []  # a reader that drained: from here fileno() announces arrivals
    payload = b"p" * 65536
    fill(lambda: parent.send_blocking(payload, timeout=0.2))  # the child does not read: sends are refused now
    assert child.send_nowait(peer, b"reply")
    assert _send_while_a_message_waits(parent, lambda: parent.send_nowait(payload) and False)
    wait_until(lambda: parent.recv_all() == [b"reply"])
