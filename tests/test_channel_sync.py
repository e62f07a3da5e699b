"""SyncChannel's outbox: a caller never sleeps on the end's lock, and what it leaves there is sent."""
import threading
import uuid

import pytest

from multifrost import protocol
from multifrost.channel_sync import SyncChannel
from multifrost.codec import pack_message
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
