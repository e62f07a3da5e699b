"""Cancellation and deadlines that reach the worker (issue 15): a cancelled or timed-out call is
cancelled in the worker, a plain method sees it through ``multifrost.current_call()``, late replies
are dropped, and a call whose deadline passed (or that was cancelled) while it queued never runs."""
import asyncio
import time

import pytest

from helpers import AsyncClient
from stream_workers import LIVENESS, SCRIPT, async_client, poll, sync_worker, tag  # noqa: F401 (fixtures)
from multifrost import CallTimeoutError, ParentWorker, current_call, extensions, protocol
from multifrost.codec import pack_message

CLOCK_SLACK = 0.01  # seconds: asyncio may wake a timer up to its clock's resolution early
REACHED = 0.25  # seconds: generous test bound for "the worker sees the cancel within 10 ms" (bench measures it)


def astatus(client, name):
    return client.run(client.worker.acall.status(name))


def test_the_worker_announces_its_extensions(sync_worker):
    assert sync_worker._channel.extensions == extensions.SUPPORTED


def test_cancelling_the_task_cancels_the_async_method(async_client):
    w, name = async_client.worker, tag()

    async def cancel_it():
        task = asyncio.ensure_future(w.acall.wait_cancelled(name, 30))
        while "started_at" not in await w.acall.status(name):
            await asyncio.sleep(0.005)
        cancelled = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cancelled

    cancelled = async_client.run(cancel_it())
    status = poll(lambda: astatus(async_client, name), lambda s: "cancelled_at" in s)
    assert "finished" not in status
    assert 0 <= status["cancelled_at"] - cancelled < REACHED


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_timeout_cancels_the_async_method(sync_worker, async_client, api):
    name = tag()
    started = time.monotonic()
    with pytest.raises(CallTimeoutError):
        if api == "sync":
            sync_worker.call.wait_cancelled(name, 30, timeout=0.3)
        else:
            async_client.run(async_client.worker.acall.wait_cancelled(name, 30, timeout=0.3))
    status = poll(lambda: sync_worker.call.status(name) if api == "sync" else astatus(async_client, name),
                  lambda s: "cancelled_at" in s)
    assert "finished" not in status
    assert status["cancelled_at"] - started < 0.3 + REACHED


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_plain_method_sees_the_cancel_through_current_call(sync_worker, async_client, api):
    name = tag()
    with pytest.raises(CallTimeoutError):
        if api == "sync":
            sync_worker.call.poll_cancelled(name, 30, timeout=0.3)
        else:
            async_client.run(async_client.worker.acall.poll_cancelled(name, 30, timeout=0.3))
    probe = (lambda: sync_worker.call.status(name)) if api == "sync" else (lambda: astatus(async_client, name))
    status = poll(probe, lambda s: "cancelled_at" in s)
    assert "finished" not in status and "cancelled_at" in status
    assert status["deadline"] is not None and status["cancelled_at"] - status["started_at"] < 0.3 + REACHED


def test_the_late_reply_of_a_cancelled_call_is_dropped_sync(sync_worker):
    results = []
    for i in range(20):
        with pytest.raises(CallTimeoutError):
            sync_worker.call.poll_cancelled(tag(), 0.05, timeout=0.01)  # its reply (if any) comes late
        results.append(sync_worker.call.mark(f"after-{i}"))
    assert results == [f"after-{i}" for i in range(20)]


def test_the_late_reply_of_a_cancelled_call_is_dropped_async(async_client):
    w = async_client.worker

    async def run():
        results = []
        for i in range(20):
            name = tag()
            with pytest.raises(CallTimeoutError):
                await w.acall.poll_cancelled(name, 0.05, timeout=0.01)  # its reply (if any) comes late
            results.append(await w.acall.mark(f"after-{i}"))
        return results

    assert async_client.run(run()) == [f"after-{i}" for i in range(20)]


def test_each_call_carries_its_remaining_timeout(sync_worker, async_client):
    remaining = sync_worker.call.remaining(timeout=5.0)
    assert 0 < remaining <= 5.0
    assert sync_worker.call.remaining(timeout=None) is None
    remaining = async_client.run(async_client.worker.acall.remaining(timeout=3.0))
    assert 0 < remaining <= 3.0


def test_current_call_outside_a_call_is_never_cancelled():
    call = current_call()
    assert call.cancelled is False and call.deadline is None


@pytest.fixture
def one_thread_worker(monkeypatch):
    """A worker whose pool has one thread, so that a plain call queues behind a blocked one."""
    monkeypatch.setenv("STREAM_WORKER_THREADS", "1")
    client = AsyncClient(ParentWorker.spawn(SCRIPT, default_timeout=LIVENESS))
    client.start()
    yield client
    client.close()


def test_a_call_cancelled_while_queued_never_runs(one_thread_worker, tmp_path):
    w, name, release = one_thread_worker.worker, tag(), tmp_path / "release"

    async def run():
        blocker = asyncio.ensure_future(w.acall.block_until(str(release), 30))
        while "started_at" not in await w.acall.astatus(str(release)):  # it holds the only pool thread
            await asyncio.sleep(0.005)
        queued = asyncio.ensure_future(w.acall.mark(name))
        await asyncio.sleep(0.1)  # let the CALL reach the worker's queue
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        until = time.monotonic() + LIVENESS  # the CANCEL was sent; wait until the worker took it: else
        while not (await w.acall.acounts()).get("cancelled") and time.monotonic() < until:  # the freed pool
            await asyncio.sleep(0.005)  # thread could start the call before the loop reads the CANCEL
        release.write_text("go")
        assert await blocker is True
        return await w.acall.status(name), await w.acall.counts()

    status, counts = one_thread_worker.run(run())
    assert "ran" not in status
    assert counts["cancelled_before_start"] >= 1


def test_a_call_whose_deadline_passed_while_queued_never_runs(one_thread_worker, tmp_path):
    w, name, release = one_thread_worker.worker, tag(), tmp_path / "release"

    async def run():
        blocker = asyncio.ensure_future(w.acall.block_until(str(release), 30))
        while "started_at" not in await w.acall.astatus(str(release)):  # it holds the only pool thread
            await asyncio.sleep(0.005)
        with pytest.raises(CallTimeoutError):
            await w.acall.mark(name, timeout=0.2)
        await w.acall.acounts()  # answered on the loop, so after the worker took the CALL (one connection, in order):
        await asyncio.sleep(0.2 + CLOCK_SLACK)  # its own deadline, 0.2 s from taking it, has passed once this returns
        release.write_text("go")
        assert await blocker is True
        return await w.acall.status(name), await w.acall.counts()

    status, counts = one_thread_worker.run(run())
    assert "ran" not in status
    assert counts["expired_before_start"] >= 1, counts


def test_the_worker_cancels_an_async_method_whose_deadline_passes(sync_worker):
    """Only the worker's own deadline is at work here: the CALL is posted and nobody waits for it."""
    name = tag()
    message = protocol.call("wait_cancelled", [name, 30])
    message["metadata"] = {extensions.CALL_KEY: {"timeout": 0.2}}
    before = sync_worker.call.counts()["deadline_passed"]
    sent = time.monotonic()
    assert sync_worker._channel.post(pack_message(message))
    status = poll(lambda: sync_worker.call.status(name), lambda s: "cancelled_at" in s)
    assert "finished" not in status
    assert 0.2 <= status["cancelled_at"] - sent < 0.2 + REACHED
    assert sync_worker.call.counts()["deadline_passed"] == before + 1


def test_a_call_whose_deadline_passed_while_queued_never_runs_sync(monkeypatch, tmp_path):
    import threading

    monkeypatch.setenv("STREAM_WORKER_THREADS", "1")
    name, release = tag(), tmp_path / "release"
    with ParentWorker.spawn(SCRIPT, default_timeout=LIVENESS) as w:
        outcome = []
        blocker = threading.Thread(target=lambda: outcome.append(w.call.block_until(str(release), 30)))
        blocker.start()
        try:
            poll(lambda: w.call.astatus(str(release)), lambda status: "started_at" in status)  # it holds the pool
            with pytest.raises(CallTimeoutError):
                w.call.mark(name, timeout=0.2)
            w.call.acounts()  # answered after the worker took the CALL: its own deadline passes 0.2 s later at most
            time.sleep(0.2 + CLOCK_SLACK)
        finally:
            release.write_text("go")
            blocker.join(LIVENESS)
        assert outcome == [True]
        assert "ran" not in w.call.status(name)
        assert w.call.counts()["expired_before_start"] >= 1
