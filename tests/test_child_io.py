"""ChildIO, the worker's socket: printed output never waits for the socket's lock."""
import threading

from multifrost.child_io import ChildIO
from multifrost.child_loop import PollLoop
from multifrost.transports import open_child_end, open_parent_end

LIVENESS = 30.0  # seconds: a generous bound for what should happen at once


def test_output_while_another_thread_holds_the_socket_leaves_on_the_next_pass():
    """A thread holding the I/O lock may be logging, and logging reaches the parent as output:
    output that waited for the lock would deadlock (the parent-watch thread once did)."""
    child, parent = open_child_end("memory://child-io-output", bind=True), None
    loop, io = PollLoop(), ChildIO(1024)
    try:
        parent = open_parent_end("memory://child-io-output", bind=False)

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
        holding, release = threading.Event(), threading.Event()

        def hold():
            with io.lock:
                holding.set()
                release.wait(LIVENESS)
        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait(LIVENESS)
        kept = []
        writer = threading.Thread(target=lambda: kept.append(io.send_output(b"printed")))
        writer.start()
        writer.join(LIVENESS)
        assert not writer.is_alive() and kept == [()]  # kept, not waiting for the lock
        assert holder.is_alive()
        release.set()
        holder.join()
        got = []

        def arrived():  # the writer rang the wake-up: the loop's next pass sends the output
            got.append(parent.recv_nowait())
            return got[-1] is not None
        loop.run_until(arrived, timeout=LIVENESS)
        assert got[-1] == b"printed"
    finally:
        release.set()
        io.detach()
        loop.close()
        child.close()
        if parent is not None:
            parent.close()


def test_output_kept_while_the_socket_was_busy_leaves_first_with_the_next_output():
    """Output kept for a pass is not held back behind it once the lock is free: the next output
    sends it first, in order (an inline method printing on would otherwise keep piling it up
    until it returned, past what the kept queue holds)."""
    child, parent = open_child_end("memory://child-io-order", bind=True), None
    loop, io = PollLoop(), ChildIO(1024)
    release = threading.Event()
    try:
        parent = open_parent_end("memory://child-io-order", bind=False)
        io.attach(child, loop, lambda: None)
        assert parent.send_nowait(b"hello")
        while io.take() is None:  # the child hears from its parent
            pass
        holding = threading.Event()

        def hold():  # as a thread sending a reply would
            with io.lock:
                holding.set()
                release.wait(LIVENESS)
        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait(LIVENESS)
        kept = [io.send_output(f"kept {i}".encode()) for i in range(3)]
        release.set()
        holder.join(LIVENESS)
        assert kept == [(), (), ()]
        assert io.send_output(b"next") == [b"kept 0", b"kept 1", b"kept 2", b"next"]
        assert [parent.recv_blocking(timeout=LIVENESS) for _ in range(4)] == [b"kept 0", b"kept 1", b"kept 2", b"next"]
    finally:
        release.set()
        io.detach()
        loop.close()
        child.close()
        if parent is not None:
            parent.close()
