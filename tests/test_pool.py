"""WorkerPool with real worker processes: results, spreading, and a clean close."""
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import alive
from multifrost import RemoteCallError, WorkerStartError
from multifrost.pool import WorkerPool


def test_sync_calls_are_correct_and_spread_over_distinct_processes(worker_script):
    with WorkerPool.spawn(worker_script, workers=2, heartbeat_interval=0) as pool:
        pids = pool.pids
        assert len(set(pids)) == 2 and None not in pids
        assert [pool.call.add(i, i) for i in range(6)] == [2 * i for i in range(6)]
        seen = [pool.call.pid() for _ in range(4)]
        assert set(seen) == set(pids)  # one caller: round-robin over both
        assert pool.map("add", [(i, 1) for i in range(20)]) == [i + 1 for i in range(20)]
        assert set(pool.map("pid", [()] * 8)) == set(pids)
        with pytest.raises(RemoteCallError, match="nope"):
            pool.call.fail("nope")
        snapshots = [w.metrics.snapshot() for w in pool.workers]
        assert sum(s["requests_total"] for s in snapshots) == 6 + 4 + 20 + 8 + 1
        assert all(s["in_flight"] == 0 for s in snapshots)
    assert not any(alive(pid) for pid in pids)


def test_least_in_flight_sends_to_the_idle_worker(worker_script, tmp_path):
    """While one worker is busy with a slow call, the next calls go to the other one."""
    flag = str(tmp_path / "flag")
    with WorkerPool.spawn(worker_script, workers=2, heartbeat_interval=0) as pool:
        with ThreadPoolExecutor(1) as caller:
            busy = caller.submit(pool.call.wait_for, flag, 20)
            deadline = time.monotonic() + 10
            while sum(pool.in_flight) == 0:
                assert time.monotonic() < deadline
                time.sleep(0.001)
            idle_pid = pool.workers[pool.in_flight.index(0)].pid
            try:
                assert {pool.call.pid() for _ in range(5)} == {idle_pid}
            finally:
                open(flag, "w").close()
            assert busy.result() is True
        assert pool.in_flight == [0, 0]


def test_async_calls_spread_and_close(worker_script):
    pool = WorkerPool.spawn(worker_script, workers=2, heartbeat_interval=0, transport="ipc")

    async def main():
        async with pool:
            results = await asyncio.gather(*(pool.acall.add(i, 2) for i in range(30)))
            pids = await asyncio.gather(*(pool.acall.pid() for _ in range(10)))
            return results, set(pids), pool.pids

    results, seen, pids = asyncio.run(main())
    assert results == [i + 2 for i in range(30)]
    assert seen == set(pids) and len(seen) == 2
    assert not any(alive(pid) for pid in pids)


def test_a_failed_start_closes_the_workers_that_started(worker_script, tmp_path):
    pool = WorkerPool([*WorkerPool.spawn(worker_script, workers=1).workers,
                       *WorkerPool.spawn(str(tmp_path / "missing.py"), workers=1).workers])
    with pytest.raises(WorkerStartError, match="not found"):
        pool.start()
    assert pool.workers[0].pid is None  # closed again


def test_bad_sizes():
    with pytest.raises(ValueError):
        WorkerPool.spawn("x.py", workers=0)
    with pytest.raises(ValueError):
        WorkerPool([])


def test_streams_from_a_pool_spread_over_its_workers():
    import os
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers", "stream_worker.py")
    with WorkerPool.spawn(script, workers=2, heartbeat_interval=0, default_timeout=10) as pool:
        streams = [pool.stream.rows(5, f"pool-{i}") for i in range(4)]
        assert [list(s) for s in streams] == [list(range(5))] * 4
        assert {w.call.status("pool-0")["produced"] + w.call.status("pool-1")["produced"]
                for w in pool.workers} == {5}  # pool-0 and pool-1 went to different workers

    async def run():
        async with WorkerPool.spawn(script, workers=2, heartbeat_interval=0, default_timeout=10) as pool:
            return [[x async for x in pool.astream.arows(3)] for _ in range(2)]

    assert asyncio.run(run()) == [[0, 1, 2]] * 2
