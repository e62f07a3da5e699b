"""Streamed results (issue 15): generator methods iterated with ``w.stream`` / ``w.astream``, with
credit flow control, early exit that reaches the generator, errors after items, and ``call`` collecting."""
import asyncio
import gc
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from stream_workers import LIVENESS, SCRIPT, async_client, poll, sync_worker, tag  # noqa: F401 (fixtures)
from multifrost import CallTimeoutError, ParentWorker, RemoteCallError, WorkerCrashedError

STOPPED = 0.25  # seconds: generous test bound for "the generator stops within 50 ms" (bench/streams.py measures it)


async def collect(worker, function, *args, **options):
    return [item async for item in worker.astream_function(function, args, **options)]


# -- items --------------------------------------------------------------------------------------

def test_items_in_order_sync(sync_worker):
    assert list(sync_worker.stream.rows(100)) == list(range(100))
    assert list(sync_worker.stream.arows(50)) == list(range(50))
    assert list(sync_worker.stream.rows(0)) == []
    assert list(sync_worker.stream.rows(3, timeout=5, namespace="default", window=1)) == [0, 1, 2]


def test_items_in_order_async(async_client):
    w = async_client.worker
    assert async_client.run(collect(w, "rows", 100)) == list(range(100))
    assert async_client.run(collect(w, "arows", 50)) == list(range(50))
    assert async_client.run(collect(w, "rows", 3, timeout=5, namespace="default", window=1)) == [0, 1, 2]


def test_big_items(sync_worker, async_client):
    size = 64 * 1024
    expected = [bytes([i]) * size for i in range(20)]
    assert list(sync_worker.stream.blobs(20, size)) == expected
    assert async_client.run(collect(async_client.worker, "blobs", 20, size)) == expected


def test_call_collects_the_items_into_a_list(sync_worker, async_client):
    assert sync_worker.call.rows(5) == [0, 1, 2, 3, 4]
    assert sync_worker.call.arows(4) == [0, 1, 2, 3]
    assert async_client.run(async_client.worker.acall.rows(3)) == [0, 1, 2]
    assert async_client.run(async_client.worker.acall.arows(3)) == [0, 1, 2]


def test_unknown_option_is_a_type_error(sync_worker):
    with pytest.raises(TypeError, match="positional arguments only"):
        sync_worker.stream.rows(3, size=4)
    with pytest.raises(ValueError, match="window"):
        sync_worker.stream.rows(3, window=0)


def test_first_item_does_not_wait_for_the_last_sync(sync_worker):
    received = None
    for _ in sync_worker.stream.paced(4, 0.2):
        received = time.monotonic() if received is None else received
    produced = sync_worker.call.paced(4, 0.0)  # any later worker time is past the last item of the stream
    assert received < produced[0] - 0.3, "the first item arrived only after (nearly) all were produced"


def test_first_item_does_not_wait_for_the_last_async(async_client):
    async def first_then_rest():
        stream = async_client.worker.astream.paced(4, 0.2)
        await stream.__anext__()
        arrived = time.monotonic()
        rest = [t async for t in stream]
        return arrived, rest[-1]

    arrived, last_produced = async_client.run(first_then_rest())
    assert arrived < last_produced - 0.3


# -- flow control ---------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window=st.integers(1, 12), extra=st.integers(0, 20))
def test_the_worker_runs_at_most_a_window_ahead(sync_worker, window, extra):
    name, n = tag(), 2 * window + extra
    stream = sync_worker.stream.rows(n, name, window=window)
    consumed = 0
    for item in stream:
        consumed += 1
        assert item == consumed - 1
        produced = sync_worker.call.status(name)["produced"]
        assert produced <= consumed + window, f"ran {produced - consumed} ahead with a window of {window}"
        if consumed == 1:  # and it does run ahead, up to the window, while the consumer waits
            ahead = poll(lambda: sync_worker.call.status(name)["produced"], lambda p: p >= min(n, window))
            assert ahead >= min(n, window)
    assert consumed == n


def test_window_async(async_client):
    w, name, window = async_client.worker, tag(), 5

    async def slow_consumer():
        seen = []
        async for _ in w.astream.arows(30, name, window=window):
            seen.append((await w.acall.status(name))["produced"] - (len(seen) + 1))
        return seen

    ahead = async_client.run(slow_consumer())
    assert len(ahead) == 30 and max(ahead) <= window


# -- leaving early ----------------------------------------------------------------------------------

def stopped_in(worker, name, left_at, method="arows"):
    """How long after ``left_at`` the generator's ``finally`` ran; it saw GeneratorExit at its yield
    (or, an async generator stopped at an await, CancelledError there)."""
    status = poll(lambda: worker.call.status(name), lambda s: "finally_at" in s)
    assert status.get("exit") in (("GeneratorExit",) if method == "rows" else ("GeneratorExit", "CancelledError")), status
    return status["finally_at"] - left_at


@pytest.mark.parametrize("how", ["break", "close", "exception", "context", "gc"])
@pytest.mark.parametrize("method", ["rows", "arows"])
def test_leaving_early_stops_the_generator_sync(sync_worker, how, method):
    name = tag()
    stream = sync_worker.stream_function(method, (10**6, name), window=4)
    if how == "break":
        for item in stream:
            if item == 2:
                break
        left = time.monotonic()
        del stream
    elif how == "close":
        next(stream)
        stream.close()
        left = time.monotonic()
    elif how == "exception":
        with pytest.raises(KeyError):
            with stream:
                next(stream)
                raise KeyError("consumer failed")
        left = time.monotonic()
    elif how == "context":
        with stream as rows:
            assert next(rows) == 0
        left = time.monotonic()
    else:
        next(stream)
        del stream
        gc.collect()
        left = time.monotonic()
    assert stopped_in(sync_worker, name, left, method) < STOPPED


@pytest.mark.parametrize("how", ["break", "aclose", "exception", "task_cancel"])
@pytest.mark.parametrize("method", ["rows", "arows"])
def test_leaving_early_stops_the_generator_async(async_client, how, method):
    w, name = async_client.worker, tag()

    async def leave():
        if how == "break":
            async for item in w.astream_function(method, (10**6, name), window=4):
                if item == 2:
                    break
        elif how == "aclose":
            stream = w.astream_function(method, (10**6, name))
            await stream.__anext__()
            await stream.aclose()
        elif how == "exception":
            try:
                async with w.astream_function(method, (10**6, name)) as stream:
                    await stream.__anext__()
                    raise KeyError("consumer failed")
            except KeyError:
                pass
        else:
            async def consume():
                async for _ in w.astream_function(method, (10**6, name), window=2):
                    await asyncio.sleep(10)
            task = asyncio.ensure_future(consume())
            while (await w.acall.status(name))["produced"] < 2:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return time.monotonic()

    left = async_client.run(leave())
    assert stopped_in(sync_worker_for(async_client), name, left, method) < STOPPED


def sync_worker_for(client):
    """Status queries through the async client, in the sync shape ``stopped_in`` wants."""
    class Calls:
        class call:
            @staticmethod
            def status(name):
                return client.run(client.worker.acall.status(name))
    return Calls


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window=st.integers(1, 8), leave_at=st.integers(0, 30), n=st.integers(1, 30))
def test_early_exit_at_any_point(sync_worker, window, leave_at, n):
    name = tag()
    got = []
    for item in sync_worker.stream.rows(n, name, window=window):
        if len(got) == leave_at:
            break
        got.append(item)
    assert got == list(range(min(n, leave_at)))
    status = poll(lambda: sync_worker.call.status(name), lambda s: "finally_at" in s)
    assert status["produced"] <= len(got) + window + 1
    if leave_at < n:  # left before the end: closed where it waited (or it had already finished)
        assert status.get("exit") == "GeneratorExit" or status["produced"] == n


# -- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fails_after", "afails_after"])
def test_exception_ends_the_stream_after_its_items_sync(sync_worker, method):
    got = []
    with pytest.raises(RemoteCallError, match="broke after 3") as caught:
        for item in sync_worker.stream_function(method, (3,)):
            got.append(item)
    assert got == [0, 1, 2]
    assert caught.value.remote_type == "ValueError"


@pytest.mark.parametrize("method", ["fails_after", "afails_after"])
def test_exception_ends_the_stream_after_its_items_async(async_client, method):
    async def run():
        got = []
        try:
            async for item in async_client.worker.astream_function(method, (3,)):
                got.append(item)
        except RemoteCallError as exc:
            return got, str(exc)
        return got, None

    got, error = async_client.run(run())
    assert got == [0, 1, 2] and "broke after 3" in error


def test_per_item_timeout_sync(sync_worker):
    stream = sync_worker.stream.paced(3, 2.0, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(CallTimeoutError):
        next(stream)
    assert time.monotonic() - started < LIVENESS
    assert list(stream) == []  # a stream that failed is over
    assert sync_worker.call.rows(2) == [0, 1]  # and the worker goes on


def test_per_item_timeout_async(async_client):
    async def run():
        stream = async_client.worker.astream.paced(3, 2.0, timeout=0.2)
        with pytest.raises(CallTimeoutError):
            await stream.__anext__()
        return await async_client.worker.acall.rows(2)

    assert async_client.run(run()) == [0, 1]


def test_unknown_function_fails_the_stream(sync_worker):
    with pytest.raises(RemoteCallError, match="Function 'nope' not found"):
        list(sync_worker.stream.nope())


def test_stream_over_the_in_process_memory_transport():
    from stream_worker import StreamWorker

    async def run():
        async with ParentWorker.inprocess(StreamWorker(), default_timeout=LIVENESS) as worker:
            return [x async for x in worker.astream.rows(5)], await worker.acall.rows(2)

    assert asyncio.run(run()) == ([0, 1, 2, 3, 4], [0, 1])


def test_stream_needs_a_started_worker():
    worker = ParentWorker.spawn(SCRIPT)
    with pytest.raises(RuntimeError, match="not started"):
        worker.stream.rows(3)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_worker_that_dies_mid_stream_fails_it_after_its_items(api):
    if api == "sync":
        with ParentWorker.spawn(SCRIPT, default_timeout=LIVENESS) as worker:
            got = []
            with pytest.raises(WorkerCrashedError):
                for item in worker.stream.crash_after(3, window=8):
                    got.append(item)
    else:
        async def run():
            got = []
            async with ParentWorker.spawn(SCRIPT, default_timeout=LIVENESS) as worker:
                with pytest.raises(WorkerCrashedError):
                    async for item in worker.astream.crash_after(3, window=8):
                        got.append(item)
            return got
        got = asyncio.run(run())
    assert got == [0, 1, 2]
