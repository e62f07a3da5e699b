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
        assert not writer.is_alive() and kept == [False]  # kept, not waiting for the lock
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
