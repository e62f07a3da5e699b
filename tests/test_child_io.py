"""ChildIO, the worker's socket: printed output never waits for the socket's lock."""
import contextlib
import threading

import pytest

from multifrost.child_io import ChildIO
from multifrost.child_loop import PollLoop
from multifrost.transports import open_child_end, open_parent_end

LIVENESS = 30.0  # seconds: a generous bound for what should happen at once


@pytest.fixture
def served(request):
    """(ChildIO attached to a child end on a PollLoop, the loop, a parent the child has heard from)."""
    url = f"memory://child-io-{request.node.name}"
    child, parent = open_child_end(url, bind=True), None
    loop, io = PollLoop(), ChildIO(1024)
    try:
        parent = open_parent_end(url, bind=False)

        def reader():
            io.pass_started()
            while io.take() is not None:
                pass
            io.after_pass()
        io.attach(child, loop, reader)
        loop.add_reader(io.wakeup.fd, lambda: (io.clear_wakeup(), reader()))
        assert parent.send_nowait(b"hello")
        reader()
        assert child.peers  # now the child has a parent to send output to
        yield io, loop, parent
    finally:
        io.detach()
        loop.close()
        child.close()
        if parent is not None:
            parent.close()


@contextlib.contextmanager
def held_by_another_thread(io: ChildIO):
    """The I/O lock held by another thread (as one sending a reply would) until the block ends."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        with io.lock:
            holding.set()
            release.wait(LIVENESS)
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(LIVENESS)
        yield holder
    finally:
        release.set()
        holder.join(LIVENESS)


def test_output_while_another_thread_holds_the_socket_leaves_on_the_next_pass(served):
    """A thread holding the I/O lock may be logging, and logging reaches the parent as output:
    output that waited for the lock would deadlock (the parent-watch thread once did)."""
    io, loop, parent = served
    with held_by_another_thread(io) as holder:
        kept = []
        writer = threading.Thread(target=lambda: kept.append(io.send_output(b"printed")))
        writer.start()
        writer.join(LIVENESS)
        assert not writer.is_alive() and kept == [()]  # kept, not waiting for the lock
        assert holder.is_alive()
    got = []

    def arrived():  # the writer rang the wake-up: the loop's next pass sends the output
        got.append(parent.recv_nowait())
        return got[-1] is not None
    loop.run_until(arrived, timeout=LIVENESS)
    assert got[-1] == b"printed"


def test_output_kept_while_the_socket_was_busy_leaves_first_with_the_next_output(served):
    """Output kept for a pass is not held back behind it once the lock is free: the next output
    sends it first, in order (an inline method printing on would otherwise keep piling it up
    until it returned, past what the kept queue holds)."""
    io, _, parent = served
    with held_by_another_thread(io):
        kept = [io.send_output(f"kept {i}".encode()) for i in range(3)]
    assert kept == [(), (), ()]
    assert io.send_output(b"next") == [b"kept 0", b"kept 1", b"kept 2", b"next"]
    assert [parent.recv_blocking(timeout=LIVENESS) for _ in range(4)] == [b"kept 0", b"kept 1", b"kept 2", b"next"]


@pytest.fixture(params=["tcp", "unix", "memory"])
def attached(request, tmp_path):
    """(ChildIO on the loop of this thread, its end, a parent it has heard from, the parent's identity)."""
    url = {"tcp": "tcp://127.0.0.1:0", "unix": f"unix://{tmp_path}/io.sock",
           "memory": f"memory://child-io-{request.node.name}"}[request.param]
    child = open_child_end(url, bind=True)
    parent = open_parent_end(child.endpoint, bind=False)
    loop, io = PollLoop(), ChildIO(1 << 20)
    io.attach(child, loop, lambda: None)
    try:
        parent.send_blocking(b"hello", LIVENESS)
        peer, _ = child.recv_blocking(LIVENESS)
        yield io, child, parent, peer
    finally:
        io.detach()
        loop.close()
        child.close()
        parent.close()


def _received(parent, count):
    return [parent.recv_blocking(LIVENESS) for _ in range(count)]


def test_replies_of_one_pass_over_zeromq_leave_together_as_it_ends(attached):
    io, child, parent, peer = attached
    io.reading = True  # the loop is in a pass of the reader (ChildWorker._on_readable)
    for n in range(3):
        io.send(peer, b"reply %d" % n)
    assert len(io._corked) == (3 if child.coalesces else 0)  # a unix or memory send is not held back
    io.reading = False
    io.uncork()  # as the pass ends
    assert _received(parent, 3) == [b"reply 0", b"reply 1", b"reply 2"]
    io.send(peer, b"between passes")  # not in a pass: sent at once
    assert not io._corked and _received(parent, 1) == [b"between passes"]


def test_a_long_pass_sends_what_it_kept_every_cork_replies(attached):
    from multifrost.child_io import CORK_REPLIES
    io, child, parent, peer = attached
    io.reading = True
    for n in range(CORK_REPLIES + 1):
        io.send(peer, b"%d" % n)
    assert not io._corked  # one more than it keeps: all of them went
    assert _received(parent, CORK_REPLIES + 1) == [b"%d" % n for n in range(CORK_REPLIES + 1)]
    io.reading = False


def test_replies_kept_back_are_sent_before_the_end_is_let_go(attached):
    io, child, parent, peer = attached
    io.reading = True
    io.send(peer, b"last words")
    io.detach()  # serving ends (the end stays open for the runner to close)
    assert _received(parent, 1) == [b"last words"]


def test_a_reply_kept_back_by_a_pass_does_not_wait_for_an_inline_method_that_blocks(worker_script, tmp_path):
    """Over tcp the replies of one pass wait for its end; a method that then blocks the loop
    mid-pass must not hold them: the watchdog sends them as it takes over."""
    import asyncio

    from multifrost import ParentWorker
    flag = tmp_path / "go"
    flag.write_text("")

    async def main():
        async with ParentWorker.spawn(worker_script, transport="tcp", default_timeout=60.0) as worker:
            for _ in range(3):  # quick: they run inline from now on
                assert await worker.acall.wait_for(str(flag), 10.0)
                assert await worker.acall.sleep(0.005) == 0.005
            flag.unlink()
            for attempt in range(3):  # while the loop sleeps inline, the next two arrive: one pass reads all three
                slept = asyncio.ensure_future(worker.acall.sleep(0.005))
                added = asyncio.ensure_future(worker.acall.add(attempt, 1))
                blocked = asyncio.ensure_future(worker.acall.wait_for(str(flag), 20.0))
                assert await asyncio.wait_for(added, 10) == attempt + 1 and await slept == 0.005
                assert not blocked.done()
                flag.write_text("")
                assert await blocked
                flag.unlink()
    asyncio.run(main())
