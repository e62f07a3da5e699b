"""WorkerPool.connect: one call interface over every live instance of a service, following
instances that join and leave."""
import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import wait_for, stop_all

from multifrost import ServiceNotFoundError, WorkerPool
from multifrost.registry import FileRegistry

pytest.importorskip("redis", reason="pip install 'multifrost[redis]' to run the Redis registry tests")
from multifrost.registry_redis import RedisRegistry  # noqa: E402

SERVICE = os.path.join(os.path.dirname(__file__), "workers", "remote_service.py")
TTL = 1.0



@pytest.fixture
def cluster(redis_url):
    """Start instances of service 'calc' registered in Redis (lease TTL 1 s)."""
    procs = []
    registry = RedisRegistry(redis_url)

    def start(count=1):
        started = [subprocess.Popen([sys.executable, SERVICE, "calc", "--registry", redis_url,
                                     "--lease-ttl", str(TTL)]) for _ in range(count)]
        procs.extend(started)
        wanted = {p.pid for p in procs if p.poll() is None}
        wait_for(lambda: {e.pid for e in registry.instances("calc")} >= wanted, 20, "the instances to register")
        return started

    yield start
    stop_all(procs)
    registry.close()


def answering(pool, calls=40):
    """The pids that answered ``calls`` concurrent calls."""
    return {pid for _, pid in pool.map("where", [()] * calls, timeout=5)}


def test_calls_spread_over_every_instance(cluster, redis_url):
    procs = cluster(2)
    with WorkerPool.connect("calc", registry=redis_url) as pool:
        assert len(pool) == 2
        assert answering(pool) == {p.pid for p in procs}
        assert pool.call.add(2, 3) == 5
        assert pool.in_flight == [0, 0]


def test_an_instance_that_joins_takes_calls(cluster, redis_url):
    first, = cluster(1)
    with WorkerPool.connect("calc", registry=redis_url, poll_interval=0.2) as pool:
        assert answering(pool) == {first.pid}
        second, = cluster(1)
        registered = time.monotonic()
        wait_for(lambda: second.pid in answering(pool, 8), 10, "the new instance to take calls")
        assert time.monotonic() - registered <= TTL + 1


def test_a_killed_instance_stops_getting_calls(cluster, redis_url):
    doomed, survivor = cluster(2)
    with WorkerPool.connect("calc", registry=redis_url, poll_interval=0.2, heartbeat_interval=0.2,
                            heartbeat_timeout=0.3, heartbeat_max_misses=1) as pool:
        assert answering(pool) == {doomed.pid, survivor.pid}
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=20)
        killed = time.monotonic()
        wait_for(lambda: len(pool) == 1, 10, "the dead instance to leave the pool")
        assert time.monotonic() - killed <= TTL + 1
        assert answering(pool) == {survivor.pid}


def test_a_registry_that_lost_every_lease_costs_no_call(cluster, redis_url):
    """Redis restarted empty: the instances write their leases back at their next renewal; meanwhile
    the pool keeps the members that answer their heartbeats, and every call succeeds."""
    import redis

    cluster(2)
    with WorkerPool.connect("calc", registry=redis_url, poll_interval=0.05, heartbeat_interval=0.2,
                            heartbeat_timeout=0.3, heartbeat_max_misses=1) as pool:
        first = answering(pool)
        assert len(first) == 2
        client, registry = redis.Redis.from_url(redis_url), RedisRegistry(redis_url)
        try:
            client.flushdb()
            assert not registry.instances("calc")  # gone until the leases renew
            results = [pool.call_function("where", timeout=5)[1] for _ in range(60)]
            assert len(pool) == 2 and set(results) <= first
            wait_for(lambda: len(registry.instances("calc")) == 2, 10, "the leases to renew")
        finally:
            client.close()
            registry.close()
        assert answering(pool) == first


@pytest.mark.parametrize("registry_kind", ["redis", "file"])
def test_no_instance_is_service_not_found(registry_kind, redis_url, registry_path):
    registry = redis_url if registry_kind == "redis" else FileRegistry(registry_path)
    started = time.monotonic()
    with pytest.raises(ServiceNotFoundError, match="calc"):
        WorkerPool.connect("calc", registry=registry, timeout=0.5).start()
    assert time.monotonic() - started < 3


def test_the_async_api_spreads_calls(cluster, redis_url):
    procs = cluster(2)

    async def main():
        async with WorkerPool.connect("calc", registry=redis_url) as pool:
            answers = await asyncio.gather(*(pool.acall.where() for _ in range(40)))
            return {pid for _, pid in answers}

    assert asyncio.run(main()) == {p.pid for p in procs}
