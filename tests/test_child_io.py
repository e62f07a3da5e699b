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
