"""A unix:// parent end whose reader is on an event loop puts a burst of sends off to one system call
(``unix_cork.py``), and every frame put off leaves: before the loop next waits, on close, when the
reader leaves, past a refusal at the high-water mark. A raw socket plays the child, so the tests see
exactly which bytes have arrived when."""
from __future__ import annotations

import asyncio
import os
import socket

import pytest

from multifrost import ParentWorker
from multifrost.transports import open_parent_end
from multifrost.transports.unix_conn import CORK_MAX

TIMEOUT = 20.0
HERE = os.path.dirname(os.path.abspath(__file__))
PLAIN = os.path.join(os.path.dirname(HERE), "workers", "plain_worker.py")


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


@pytest.fixture
def link(tmp_path):
    """(parent end, raw peer socket): the parent connects to a listener the test holds."""
    path = str(tmp_path / "p.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    parent = open_parent_end(f"unix://{path}", bind=False, sndhwm=4)
    peer, _ = listener.accept()
    peer.settimeout(TIMEOUT)
    yield parent, peer
    parent.close()
    peer.close()
    listener.close()


def arrived_now(peer: socket.socket) -> bytes:
    """What the peer can read without waiting."""
    got = b""
    peer.setblocking(False)
    try:
        while chunk := peer.recv(1 << 20):
            got += chunk
    except BlockingIOError:
        pass
    finally:
        peer.settimeout(TIMEOUT)
    return got


def read_exactly(peer: socket.socket, size: int) -> bytes:
    """Block (in a thread, while the loop sleeps) until ``size`` bytes came; the socket timeout fails a stall."""
    got = b""
    while len(got) < size:
        chunk = peer.recv(size - len(got))
        assert chunk, f"the parent hung up after {len(got)} of {size} bytes"
        got += chunk
    return got


def frames_in(data: bytes) -> int:
    count = 0
    while len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
        data = data[4 + int.from_bytes(data[:4], "big"):]
        count += 1
    return count


def on_loop(parent, body) -> None:
    """Run ``body()`` as a plain callback on a fresh loop where ``parent``'s reader (a no-op) gave
    ``soon``, then await what it returned (if anything)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        parent.set_reader(lambda: None, loop.call_soon)
        done = loop.create_future()

        def run() -> None:
            try:
                done.set_result(body())
            except BaseException as exc:
                done.set_exception(exc)
        loop.call_soon(run)
        then = await done
        if then is not None:
            await then
    asyncio.run(main())


async def expect(reading, expected: bytes) -> None:
    assert await reading == expected


def test_a_burst_leaves_in_one_piece_before_the_loop_sleeps(link):
    """The first send of a burst goes at once, the rest wait for the end of the loop's turn; nothing
    else runs on the loop after the burst, which then sleeps until the peer has them all."""
    parent, peer = link
    payloads = [b"m%d" % n for n in range(5)]

    def burst():
        for payload in payloads:
            assert parent.send_nowait(payload)
        assert arrived_now(peer) == frame(payloads[0])  # the others are put off until the turn ends
        rest = b"".join(map(frame, payloads[1:]))
        return expect(asyncio.to_thread(read_exactly, peer, len(rest)), rest)  # the loop sleeps meanwhile

    on_loop(parent, burst)


def test_a_long_burst_leaves_every_cork_max_frames(link):
    """The peer starts on a long burst before it ends: at most CORK_MAX frames wait at a time."""
    parent, peer = link
    payloads = [b"n%d" % n for n in range(3 * CORK_MAX)]

    def burst():
        for payload in payloads:
            assert parent.send_nowait(payload)
        now = arrived_now(peer)
        assert CORK_MAX < frames_in(now) < len(payloads)
        whole = b"".join(map(frame, payloads))
        assert whole.startswith(now) and len(now) < len(whole)
        return expect(asyncio.to_thread(read_exactly, peer, len(whole) - len(now)), whole[len(now):])

    on_loop(parent, burst)


def test_a_lone_send_goes_at_once(link):
    """One send per turn (a sequential caller) costs no extra turn: it is in the peer's socket when it returns."""
    parent, peer = link

    def lone():
        assert parent.send_nowait(b"alone")
        assert arrived_now(peer) == frame(b"alone")

    on_loop(parent, lone)


def test_close_lets_frames_put_off_leave(link):
    parent, peer = link

    def burst_then_close():
        for n in range(4):
            assert parent.send_nowait(b"c%d" % n)
        parent.close()
        assert arrived_now(peer) == b"".join(frame(b"c%d" % n) for n in range(4))

    on_loop(parent, burst_then_close)


def test_the_reader_leaving_lets_frames_put_off_leave(link):
    """``set_reader(None)`` (the async channel closing) sends at once what waits, and later sends go at once."""
    parent, peer = link

    def burst_then_leave():
        for n in range(3):
            assert parent.send_nowait(b"r%d" % n)
        parent.set_reader(None)
        assert arrived_now(peer) == b"".join(frame(b"r%d" % n) for n in range(3))
        assert parent.send_nowait(b"after") and parent.send_nowait(b"again")
        assert arrived_now(peer) == frame(b"after") + frame(b"again")

    on_loop(parent, burst_then_leave)


def test_sends_from_another_thread_are_never_put_off(link):
    """Only the reader's loop thread runs the queued flush: a send from elsewhere goes at once."""
    parent, peer = link

    def from_a_thread() -> bytes:
        assert parent.send_nowait(b"t1") and parent.send_nowait(b"t2")
        return arrived_now(peer)

    on_loop(parent, lambda: expect(asyncio.to_thread(from_a_thread), frame(b"t1") + frame(b"t2")))


def test_sends_after_the_readers_loop_closed_go_at_once(link):
    """Nothing would run a flush queued on a closed loop: a send in its thread goes at once instead."""
    parent, peer = link
    loop = asyncio.new_event_loop()
    parent.set_reader(lambda: None, loop.call_soon)
    loop.close()
    assert parent.send_nowait(b"a") and parent.send_nowait(b"b") and parent.send_nowait(b"c")
    assert arrived_now(peer) == frame(b"a") + frame(b"b") + frame(b"c")


def test_a_send_refused_mid_burst_leaves_every_frame_before_it_in_order(link):
    """Small frames put off, large ones that fill the kernel buffer (queued to the writer thread) until the
    high-water mark refuses a send: every accepted frame reaches the peer, in order, while the loop sleeps."""
    parent, peer = link
    accepted: list[bytes] = []

    def burst():
        for n in range(100_000):
            payload = b"%d:" % n + (b"L" * 300_000 if n % 3 == 2 else b"s")
            if not parent.send_nowait(payload):
                break
            accepted.append(payload)
        else:
            raise AssertionError("the high-water mark never refused a send")
        whole = b"".join(map(frame, accepted))
        return expect(asyncio.to_thread(read_exactly, peer, len(whole)), whole)

    on_loop(parent, burst)
    assert len(accepted) > 4


def test_async_calls_started_from_plain_callbacks_are_answered():
    """Over unix, calls started by loop callbacks in bursts (longer than CORK_MAX, and a lone one just
    before the loop has nothing else to do) all get their answers."""
    async def main() -> None:
        async with ParentWorker.spawn(PLAIN, transport="unix") as worker:
            loop = asyncio.get_running_loop()
            tasks: list[asyncio.Task] = []

            def start(count: int, started: asyncio.Future) -> None:
                tasks.extend(loop.create_task(worker.acall.add(n, 1)) for n in range(count))
                started.set_result(None)
            for count in (1, 2, 3 * CORK_MAX + 1, 1):
                started = loop.create_future()
                loop.call_soon(start, count, started)
                await started
                await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
            assert [task.result() for task in tasks] == [
                n + 1 for count in (1, 2, 3 * CORK_MAX + 1, 1) for n in range(count)]
    asyncio.run(main())
