"""The multifrost.wire logger: one DEBUG record per message, sent and received, on both sides."""
import asyncio
import logging

import pytest
from math_worker import MathWorker

from multifrost import ParentWorker, protocol, wire

FIELDS = ("direction", "type", "request_id", "function", "namespace", "size", "peer")


def _wire_records(caplog):
    return [r for r in caplog.records if r.name == "multifrost.wire"]


def _one(records, **want):
    found = [r for r in records if all(getattr(r, k, None) == v for k, v in want.items())]
    assert len(found) == 1, (want, [(r.getMessage(), r.__dict__.get("worker_id")) for r in records])
    return found[0]


def test_a_spawned_call_is_recorded_going_out_and_coming_back(worker_script, caplog):
    caplog.set_level(logging.DEBUG, logger="multifrost.wire")
    with ParentWorker.spawn(worker_script, heartbeat_interval=0) as worker:
        caplog.clear()
        assert worker.call.add(2, 3) == 5
        pid = worker.pid
    records = _wire_records(caplog)
    sent = _one(records, direction="sent", type=protocol.CALL, function="add")
    got = _one(records, direction="received", type=protocol.RESPONSE, request_id=sent.request_id)
    for record in (sent, got):
        assert all(hasattr(record, key) for key in FIELDS)
        assert record.levelno == logging.DEBUG and record.peer.startswith("unix://")  # the default for a Python worker
        assert record.worker_id == "math_worker.py" and record.pid == pid and record.size > 20
    assert sent.namespace == "default" and got.function is None
    assert f"sent {protocol.CALL}" in sent.getMessage() and "add()" in sent.getMessage()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_both_sides_of_an_inprocess_call_are_recorded(api, caplog):
    caplog.set_level(logging.DEBUG, logger="multifrost.wire")
    worker = ParentWorker.inprocess(MathWorker())
    if api == "sync":
        with worker:
            caplog.clear()
            assert worker.call.echo("hi") == "hi"
    else:
        async def main():
            async with worker:
                caplog.clear()
                assert await worker.acall.echo("hi") == "hi"
        asyncio.run(main())
    records = _wire_records(caplog)
    parent_side = [r for r in records if r.peer.startswith("memory://")]
    child_side = [r for r in records if not r.peer.startswith("memory://")]
    call = _one(parent_side, direction="sent", type=protocol.CALL, function="echo")
    parent_got = _one(parent_side, direction="received", type=protocol.RESPONSE)
    child_got = _one(child_side, direction="received", type=protocol.CALL, function="echo")
    child_sent = _one(child_side, direction="sent", type=protocol.RESPONSE)
    assert {r.worker_id for r in records} == {"MathWorker"} and child_got.pid > 0
    ids = {r.request_id for r in (call, child_got, child_sent, parent_got)}
    assert len(ids) == 1
    assert call.size == child_got.size and child_sent.size == parent_got.size  # the same bytes, both ends
    assert child_got.peer == child_sent.peer  # the child names the parent by its identity (hex)
    assert bytes.fromhex(child_got.peer)


def test_nothing_is_recorded_above_debug(worker_script, caplog):
    caplog.set_level(logging.INFO, logger="multifrost.wire")
    with ParentWorker.inprocess(MathWorker()) as worker:
        assert worker.call.add(1, 1) == 2
    assert not _wire_records(caplog)
    assert not wire.wire_debug(wire.DEBUG)


def test_a_payload_that_does_not_decode_is_still_recorded(caplog):
    caplog.set_level(logging.DEBUG, logger="multifrost.wire")
    wire.note(wire.log, "received", b"\xc1 not msgpack", "tcp://127.0.0.1:1")
    (record,) = _wire_records(caplog)
    assert record.size == 13 and record.type is None and record.request_id is None
