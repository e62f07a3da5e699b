"""Negotiating the extensions (issue 15): the announcement, what a parent agrees to, and a worker
that shrugs off extension messages it cannot use."""
import os

import pytest
from hypothesis import given, strategies as st

from multifrost import CallTimeoutError, ParentWorker, extensions, protocol
from multifrost.codec import pack_message

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "workers", "stream_worker.py")

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=5))
announcements = st.dictionaries(st.sampled_from(["stream", "cancel", "deadline", "trace", "other", ""]), values)


@given(metadata=st.one_of(values, st.dictionaries(st.text(max_size=15), values),
                          st.fixed_dictionaries({extensions.ANNOUNCE_KEY: st.one_of(values, announcements)})))
def test_negotiate_takes_only_known_names_at_versions_both_speak(metadata):
    agreed = extensions.negotiate(metadata)
    announced = metadata.get(extensions.ANNOUNCE_KEY) if isinstance(metadata, dict) else None
    if not isinstance(announced, dict):
        assert agreed is None
        return
    for name, version in agreed.items():
        assert name in extensions.SUPPORTED
        assert 1 <= version <= extensions.SUPPORTED[name] and version <= announced[name]
    for name, version in announced.items():
        if name in extensions.SUPPORTED and type(version) is int and version >= 1:
            assert name in agreed


def test_a_parent_heartbeat_never_carries_the_announcement():
    """So that a v4 child echoing our metadata back can never look like a multifrost worker."""
    message = protocol.heartbeat()
    assert extensions.ANNOUNCE_KEY not in message["metadata"]
    echo = protocol.heartbeat_echo(protocol.parse(message))  # what the JavaScript child sends back, in effect
    assert extensions.negotiate(echo["metadata"]) is None
    assert extensions.negotiate(extensions.announce(echo)["metadata"]) == extensions.SUPPORTED


def test_call_extras_only_for_a_worker_that_agreed():
    assert extensions.call_extras({}, 5.0, "00-" + "1" * 32 + "-" + "2" * 16 + "-01", 8) is None
    assert extensions.call_extras({"cancel": 1}, 5.0, "tp", None) == {}
    assert extensions.call_extras(extensions.SUPPORTED, 5.0, "tp", None) == {"timeout": 5.0, "traceparent": "tp"}
    assert extensions.call_extras(extensions.SUPPORTED, None, None, 8) == {"stream": {"window": 8}}


def test_the_worker_ignores_extension_messages_it_cannot_use():
    with ParentWorker.spawn(SCRIPT, default_timeout=10) as worker:
        junk = [extensions.cancel("no-such-call"), extensions.credit("no-such-call", 5),
                {**extensions.credit("x", 1), "credit": "many"}, {**extensions.cancel("y"), "id": None}]
        for message in junk:
            assert worker._channel.post(pack_message(message))
        assert list(worker.stream.rows(3, window=1)) == [0, 1, 2]
        stream = worker.stream.rows(10, window=2)
        assert next(stream) == 0
        # credit for a stream of another id, and a nonsense credit for this one, change nothing
        worker._channel.post(pack_message({**extensions.credit(stream._id, 1), "credit": -3}))
        assert list(stream) == list(range(1, 10))
        assert worker.call.mark("still serving") == "still serving"


def test_a_stream_for_another_namespace_times_out_per_item():
    with ParentWorker.spawn(SCRIPT, default_timeout=10) as worker:
        with pytest.raises(CallTimeoutError):
            next(worker.stream.rows(3, namespace="elsewhere", timeout=0.2))
        assert list(worker.stream.rows(2, namespace="default")) == [0, 1]


@pytest.mark.parametrize("extras", [
    {"timeout": "soon"}, {"timeout": -1.0}, {"timeout": 1e308}, {"timeout": True}, {"traceparent": 5},
    {"traceparent": "00-zz-yy-01"}, {"stream": "yes"}, {"stream": {"window": 0}}, {"stream": {"window": True}},
    "not a map", [], None,
])
def test_odd_call_metadata_gets_a_sensible_answer(extras):
    """Whatever ``mf_call`` holds, the call is answered (or refused for a passed deadline) and the worker goes on."""
    with ParentWorker.spawn(SCRIPT, default_timeout=10) as worker:
        for function, args in (("mark", ["x"]), ("rows", [3])):
            message = protocol.call(function, args)
            message["metadata"] = {extensions.CALL_KEY: extras}
            reply = worker._channel.request(message["id"], pack_message(message), 10, "odd call")
            if isinstance(extras, dict) and extras.get("timeout") == -1.0:
                assert reply.type == "error" and reply.error.startswith("CallTimeoutError: not started")
            else:
                assert reply.type == "response", reply.raw
                assert reply.result == ("x" if function == "mark" else [0, 1, 2])
        assert list(worker.stream.rows(2)) == [0, 1]


@pytest.mark.parametrize("metadata", [5, "text", [extensions.CALL_KEY], {extensions.CALL_KEY: 1}])
def test_a_call_whose_metadata_is_not_a_map_is_answered(metadata):
    with ParentWorker.spawn(SCRIPT, default_timeout=10) as worker:
        message = protocol.call("mark", ["y"])
        message["metadata"] = metadata
        reply = worker._channel.request(message["id"], pack_message(message), 10, "odd metadata")
        assert reply.type == "response" and reply.result == "y"
