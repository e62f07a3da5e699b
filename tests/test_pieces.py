"""``pack_message(..., gather=True)``: large bytes values left in place as parts of a ``Pieces``,
whose parts join to exactly the bytes ``pack_message`` gives; and the ends and callers that use it."""
from __future__ import annotations

import logging
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multifrost import ParentWorker, _codec_fallback, wire
from multifrost._pieces import GATHER_MAX, GATHER_MIN, Pieces
from multifrost.channel_base import _Channel
from multifrost.child_io import ChildIO
from multifrost.child_methods import result_payload
from multifrost.codec import unpack_message
from multifrost.errors import PayloadError
from multifrost.transports import open_child_end

compiled = pytest.importorskip("multifrost._codec", reason="gathering is the compiled codec's")
PROPERTY = settings(derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

# A few large objects made once: the property draws which of them a message holds, and where.
BIG = [os.urandom(GATHER_MIN), os.urandom(GATHER_MIN + 7), os.urandom(200_000)]
JUST_UNDER = os.urandom(GATHER_MIN - 1)
COPIED = [bytearray(GATHER_MIN), memoryview(os.urandom(GATHER_MIN)), JUST_UNDER]  # never referenced
scalars = (st.integers(-5, 5) | st.text(max_size=5) | st.binary(max_size=8) | st.none()
           | st.sampled_from(BIG) | st.sampled_from(COPIED))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
                      max_leaves=12)
messages = st.dictionaries(st.text(max_size=4), values, max_size=5)


def big_in_order(value: object) -> list[bytes]:
    """The referable values of ``value`` (exact bytes of GATHER_MIN or more), in packing order."""
    if type(value) is bytes:
        return [value] if len(value) >= GATHER_MIN else []
    if isinstance(value, list):
        return [found for item in value for found in big_in_order(item)]
    if isinstance(value, dict):
        return [found for item in value.values() for found in big_in_order(item)]
    return []


@PROPERTY
@given(messages)
def test_gathered_parts_join_to_the_packed_bytes_and_hold_the_values_themselves(message):
    packed = compiled.pack_message(message)
    gathered = compiled.pack_message(message, gather=True)
    expected = big_in_order(message)[:GATHER_MAX]
    if not expected:
        assert type(gathered) is bytes and gathered == packed
        return
    assert type(gathered) is Pieces
    assert all(type(part) is bytes for part in gathered.parts)
    assert bytes(gathered) == packed == _codec_fallback.pack_message(message)
    assert len(gathered) == len(packed)
    referenced = [part for part in gathered.parts if any(part is big for big in BIG)]
    assert len(referenced) == len(expected) and all(a is b for a, b in zip(referenced, expected))
    assert unpack_message(bytes(gathered)) == unpack_message(packed)


def test_at_most_gather_max_values_are_referenced_and_the_rest_copied():
    message = {"args": [BIG[0]] * (GATHER_MAX + 5)}
    gathered = compiled.pack_message(message, gather=True)
    assert sum(part is BIG[0] for part in gathered.parts) == GATHER_MAX
    assert bytes(gathered) == compiled.pack_message(message)


def test_a_failed_gathering_pack_raises_as_the_plain_one_and_keeps_no_reference():
    big = os.urandom(GATHER_MIN)
    message = {"args": [big, big, object()]}
    before = sys.getrefcount(big)
    for _ in range(3):
        with pytest.raises(PayloadError) as plain:
            compiled.pack_message(message)
        with pytest.raises(PayloadError) as gathered:
            compiled.pack_message(message, gather=True)
        assert str(gathered.value) == str(plain.value)
    assert sys.getrefcount(big) == before


def test_the_pure_twin_accepts_gather_and_returns_the_same_bytes():
    message = {"result": BIG[2]}
    assert _codec_fallback.pack_message(message, gather=True) == compiled.pack_message(message)


def test_the_wire_record_of_a_gathered_message_decodes_it(caplog):
    gathered = compiled.pack_message({"type": "call", "id": "g1", "function": "echo", "args": [BIG[0]]}, gather=True)
    assert type(gathered) is Pieces
    with caplog.at_level(logging.DEBUG, logger="multifrost.wire"):
        wire.note(wire.log, "sent", gathered, "somewhere")
    assert "sent call g1 echo()" in caplog.text and f"{len(gathered)} bytes" in caplog.text


def test_a_result_is_gathered_only_when_asked():
    assert type(result_payload(None, "r1", len, BIG[1], gather=True)) is Pieces
    assert type(result_payload(None, "r1", len, BIG[1])) is bytes


def test_the_worker_gathers_its_replies_over_an_end_that_gathers(tmp_path):
    for url, gathers in ((f"unix://{tmp_path}/g.sock", True), ("tcp://127.0.0.1:0", False)):
        end = open_child_end(url, bind=True)
        io = ChildIO(1 << 20)
        try:
            io.attach(end, loop=None, reader=lambda: None)  # type: ignore[arg-type]  # no pass runs here
            assert io.gathers is gathers and end.gathers is gathers
        finally:
            io.detach()
            end.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_large_bytes_argument_leaves_the_parent_uncopied_over_unix(worker_script, monkeypatch, transport):
    """Over unix the CALL reaches the end as Pieces holding the caller's bytes object; over tcp as bytes."""
    sent: list = []
    original = _Channel._put

    def spy(self, payload):
        sent.append(payload)
        return original(self, payload)
    monkeypatch.setattr(_Channel, "_put", spy)
    value = os.urandom(3 * GATHER_MIN)
    with ParentWorker.spawn(worker_script, transport=transport) as worker:
        assert worker.call.echo(value) == value
    calls = [p for p in sent if len(p) > len(value)]
    assert len(calls) == 1
    if transport == "unix":
        assert type(calls[0]) is Pieces and any(part is value for part in calls[0].parts)
    else:
        assert type(calls[0]) is bytes


SPY_WORKER = '''
from multifrost import ChildWorker
from multifrost.transports.unix import UnixChildEnd

SENT = []
_send = UnixChildEnd.send_nowait


def spy(self, peer, payload):
    SENT.append((type(payload).__name__, len(payload)))
    return _send(self, peer, payload)


UnixChildEnd.send_nowait = spy


class Spied(ChildWorker):
    def echo(self, value):
        return value

    def blobs(self, n, size):
        for i in range(n):
            yield bytes([i]) * size

    def sent(self):
        return [list(entry) for entry in SENT]


if __name__ == "__main__":
    Spied().run()
'''


def test_the_worker_sends_large_results_and_stream_items_uncopied_over_unix(tmp_path):
    """In a real worker over unix, a large bytes result and large bytes stream items reach the end as Pieces."""
    script = tmp_path / "spied_worker.py"
    script.write_text(SPY_WORKER)
    value = os.urandom(2 * GATHER_MIN)
    with ParentWorker.spawn(str(script), transport="unix") as worker:
        assert worker.call.echo(value) == value
        assert list(worker.stream.blobs(3, GATHER_MIN)) == [bytes([i]) * GATHER_MIN for i in range(3)]
        assert worker.call.echo(b"small") == b"small"
        sent = worker.call.sent()
    large = [kind for kind, size in sent if size > GATHER_MIN]
    assert large == ["Pieces"] * 4  # the echo's RESPONSE and three STREAM_ITEMs
    assert all(kind == "bytes" for kind, size in sent if size < GATHER_MIN)
