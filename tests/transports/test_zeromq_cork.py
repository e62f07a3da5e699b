"""A ZeroMQ parent end's sends on its reader's event loop: the first of a turn goes at once, the
rest leave together as the turn ends; nothing accepted is lost at the high-water mark, and order holds."""
import asyncio
import threading

from multifrost.transports import open_child_end, open_parent_end
from multifrost.transports.zeromq_cork import CORK_MAX, SendCork

DEADLINE = 30.0


class _Socket:
    """Stands for libzmq: takes ``room`` payloads, then refuses until given more room."""

    def __init__(self, room=10_000):
        self.sent, self.room = [], room

    def send(self, payload):
        if len(self.sent) >= self.room:
            return False
        self.sent.append(payload)
        return True


def _corked(room=10_000):
    socket, turn = _Socket(room), []
    cork = SendCork(socket.send)
    cork.on_loop(turn.append)  # this thread is the reader's loop; turn holds what runs as the turn ends
    return cork, socket, turn


def _end_turn(turn):
    while turn:
        turn.pop(0)()


def test_the_first_send_of_a_turn_goes_at_once_and_the_rest_leave_together_as_it_ends():
    cork, socket, turn = _corked()
    assert all(cork.send(b"%d" % n) for n in range(5))
    assert socket.sent == [b"0"] and len(turn) == 1  # one flush queued for the turn, not one a send
    _end_turn(turn)
    assert socket.sent == [b"%d" % n for n in range(5)]
    assert cork.send(b"next turn") and socket.sent[-1] == b"next turn"  # first of its turn: at once


def test_a_receive_lets_what_waits_go_and_the_next_send_goes_at_once():
    cork, socket, turn = _corked()
    cork.send(b"a")
    cork.send(b"b")
    cork.flush()  # as the reader's receive does
    assert socket.sent == [b"a", b"b"]
    cork.send(b"c")
    assert socket.sent == [b"a", b"b", b"c"]


def test_cork_max_waiting_sends_leave_at_once():
    cork, socket, turn = _corked()
    for n in range(CORK_MAX + 1):
        cork.send(b"%d" % n)
    assert socket.sent == [b"%d" % n for n in range(CORK_MAX + 1)]


def test_a_refused_send_stays_first_and_new_sends_are_refused_until_it_went():
    cork, socket, turn = _corked(room=2)
    assert cork.send(b"a") and cork.send(b"b") and cork.send(b"c")  # c waits for the turn's end
    _end_turn(turn)
    assert socket.sent == [b"a", b"b"]  # the mark: c is kept, first in line
    assert cork.send(b"d") is False  # c still cannot go: d is refused, and not kept
    socket.room = 10
    assert cork.send(b"e")  # c goes first, then e
    _end_turn(turn)
    assert socket.sent == [b"a", b"b", b"c", b"e"]


def test_sends_from_another_thread_or_without_a_loop_go_at_once():
    cork, socket, turn = _corked()
    cork.send(b"first")
    other = threading.Thread(target=cork.send, args=(b"from another thread",))
    other.start()
    other.join(DEADLINE)
    assert socket.sent == [b"first", b"from another thread"] and not turn
    cork.send(b"waits")
    cork.on_loop(None)  # the reader left: what waits goes now, and so does every later send
    cork.send(b"at once")
    assert socket.sent[-2:] == [b"waits", b"at once"]


def test_a_send_after_the_loop_closed_goes_at_once():
    socket = _Socket()
    cork = SendCork(socket.send)

    def closed(_callback):
        raise RuntimeError("Event loop is closed")
    cork.on_loop(closed)
    cork.send(b"a")
    cork.send(b"b")
    assert socket.sent == [b"a", b"b"]


def test_over_zeromq_a_turns_sends_arrive_in_order_and_a_refused_one_never_arrives():
    parent = open_parent_end("tcp://127.0.0.1:0", bind=True, sndhwm=4, rcvhwm=4)
    child = open_child_end(parent.endpoint, bind=False, sndhwm=4, rcvhwm=4)
    payload = b"x" * 65536

    async def main():
        loop = asyncio.get_running_loop()
        await parent.send(b"first", timeout=DEADLINE)  # the child has connected
        parent.set_reader(lambda: loop.call_soon(parent.recv_all), loop.call_soon)  # as the async channel's reader:
        loop.add_reader(parent.fileno(), parent.recv_all)  # a pass when the end has news, or a send hid some
        accepted, refused = [b"first"], None
        for n in range(100_000):  # one turn: the child reads nothing meanwhile
            message = b"%d:" % n + payload
            if not parent.send_nowait(message):
                refused = message
                break
            accepted.append(message)
        assert refused is not None and len(accepted) > 2
        got = []
        while len(got) < len(accepted):
            item = child.recv_nowait()
            if item is None:
                await asyncio.sleep(0.001)
            else:
                got.append(item[1])
        loop.remove_reader(parent.fileno())
        parent.set_reader(None)
        return accepted, got, refused

    try:
        accepted, got, refused = asyncio.run(asyncio.wait_for(main(), DEADLINE))
        assert got == accepted and refused not in got
    finally:
        child.close()
        parent.close()
