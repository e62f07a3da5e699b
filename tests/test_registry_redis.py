"""The Redis registry: leases that expire, renew and come back, several instances per id,
selection by URL, services and parents using it, and a Redis that is down."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

from helpers import CLIENTS, wait_for, stop_all
from multifrost import ParentWorker, RegistryError, WorkerCrashedError
from multifrost.cli import main as cli_main
from multifrost.registries import dial_endpoint, live_instances, open_registry
from multifrost.registry import FileRegistry, ServiceEntry
from redis_server import RedisServer, free_port

redis = pytest.importorskip("redis", reason="pip install 'multifrost[redis]' to run the Redis registry tests")
from multifrost.registry_redis import InstanceEntry, RedisRegistry  # noqa: E402

SERVICE = os.path.join(os.path.dirname(__file__), "workers", "remote_service.py")



@pytest.fixture
def registry(redis_url):
    reg = RedisRegistry(redis_url)
    yield reg
    reg.close()


@pytest.fixture
def services(tmp_path):
    """Start remote_service.py processes; every one is stopped after the test."""
    procs = []

    def start(service_id, *options, env=None):
        proc = subprocess.Popen([sys.executable, SERVICE, service_id, *options],
                                env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    stop_all(procs)


def test_leases_hold_several_instances_per_id_and_expire(registry):
    a = registry.new_entry("calc", 5001, host="10.1.0.1", curve_public_key="k" * 40)
    b = registry.new_entry("calc", 5002, host="10.1.0.2")
    registry.write(a, ttl=60)
    registry.write(b, ttl=0.3)
    registry.write(registry.new_entry("other", 5003), ttl=60)
    assert {e.instance for e in registry.instances("calc")} == {a.instance, b.instance}
    assert [e.service_id for e in registry.all_instances()] == ["calc", "calc", "other"]
    assert a in registry.instances("calc")  # every field survives the round trip
    wait_for(lambda: len(registry.instances("calc")) == 1, 5, "the short lease to expire")
    assert registry.instances("calc") == [a]
    raw = json.loads(redis.Redis.from_url(registry.url).get(registry.key("calc", a.instance)))
    assert raw == {"id": "calc", "instance": a.instance, "host": "10.1.0.1", "port": 5001, "pid": os.getpid(),
                   "hostname": a.hostname, "started": a.started, "curve_public_key": "k" * 40}


def test_ids_with_glob_characters_and_colons_do_not_mix(registry):
    for sid in ("a", "a:b", "a*", "[a]"):
        registry.write(registry.new_entry(sid, 6000), ttl=60)
    for sid in ("a", "a:b", "a*", "[a]"):
        assert [e.service_id for e in registry.instances(sid)] == [sid]


def test_malformed_values_are_ignored(registry, caplog):
    client = redis.Redis.from_url(registry.url)
    client.set("multifrost:service:calc:x", "not json")
    client.set("multifrost:service:calc:y", json.dumps({"id": "calc", "instance": "y", "host": "h", "port": 0}))
    client.close()
    registry.write(registry.new_entry("calc", 7000), ttl=60)
    assert [e.port for e in registry.instances("calc")] == [7000]
    assert "malformed lease" in caplog.text


def test_a_lease_is_renewed_until_closed_then_deleted(registry):
    lease = registry.announce("calc", 5000, lease_ttl=0.3)
    try:
        renewals_needed = time.monotonic() + 1.2  # four lease lifetimes
        while time.monotonic() < renewals_needed:
            assert [e.instance for e in registry.instances("calc")] == [lease.entry.instance]
            time.sleep(0.05)
    finally:
        lease.close()
    assert registry.instances("calc") == []


def test_register_and_unregister_of_the_registry_interface(registry):
    entry = registry.register("calc", 5000)
    assert isinstance(entry, InstanceEntry) and entry.alive
    assert registry.lookup("calc") == entry
    assert registry.entries() == {"calc": entry}
    assert registry.discover("calc", timeout=1) == entry
    assert registry.prune() == []
    assert not registry.unregister("calc", pid=os.getpid() + 1)
    assert registry.unregister("calc")
    assert registry.lookup("calc") is None


def test_redis_down_is_a_registry_error_naming_the_url():
    url = f"redis://127.0.0.1:{free_port()}/0"
    reg = RedisRegistry(url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RegistryError, match=url.replace("/", ".")):
        reg.instances("calc")
    with pytest.raises(RegistryError, match="127.0.0.1"):
        ParentWorker.connect("calc", timeout=5, registry=reg).start()
    assert time.monotonic() - started < 5
    reg.close()


def test_passwords_stay_out_of_messages():
    reg = RedisRegistry(f"redis://user:hunter2@127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(RegistryError) as info:
        reg.instances("calc")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    reg.close()


def test_a_lease_comes_back_after_redis_restarts():
    server = RedisServer().start()
    reg = RedisRegistry(server.url, timeout=0.3)
    try:
        lease = reg.announce("calc", 5000, lease_ttl=0.6)
        server.stop()
        with pytest.raises(RegistryError):
            reg.instances("calc")
        server.start()
        wait_for(lambda: [e.instance for e in reg.instances("calc")] == [lease.entry.instance], 5,
                 "the lease to be written again")
        lease.close()
        assert reg.instances("calc") == []
    finally:
        reg.close()
        server.remove()


def test_open_registry_by_name(redis_url, registry_path, monkeypatch):
    assert isinstance(open_registry(redis_url), RedisRegistry)
    assert isinstance(open_registry(str(registry_path)), FileRegistry)
    given = FileRegistry(registry_path)
    assert open_registry(given) is given
    assert isinstance(open_registry(), FileRegistry)
    monkeypatch.setenv("MULTIFROST_REGISTRY", redis_url)
    from_env = open_registry()
    assert isinstance(from_env, RedisRegistry) and from_env.url == redis_url
    from_env.close()
    with pytest.raises(ValueError, match="unknown URL scheme"):
        open_registry("http://example.invalid/registry")


@pytest.mark.parametrize("api", ["sync", "async"])
def test_service_and_parent_through_redis(api, services, redis_url, capsys):
    proc = services("calc", "--registry", redis_url)
    registry = RedisRegistry(redis_url)
    try:
        wait_for(lambda: registry.instances("calc"), 20, "the service to register")
        entry = registry.instances("calc")[0]
        assert (entry.host, entry.pid, entry.curve_public_key) == ("127.0.0.1", proc.pid, None)
        client = CLIENTS[api](ParentWorker.connect("calc", registry=redis_url))
        client.start()
        try:
            assert client.call("add", 2, 3) == 5
            assert client.worker.endpoint == f"tcp://127.0.0.1:{entry.port}"
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert registry.instances("calc") == []  # a clean stop deletes the lease
    finally:
        registry.close()


def test_services_lists_every_instance_with_its_host(services, redis_url, capsys):
    first, second = services("calc", "--registry", redis_url), services("calc", "--registry", redis_url)
    registry = RedisRegistry(redis_url)
    try:
        wait_for(lambda: len(registry.instances("calc")) == 2, 20, "both services to register")
        assert cli_main(["--registry", redis_url, "services"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["SERVICE", "INSTANCE", "HOST", "PORT", "PID", "HOSTNAME", "CURVE", "STARTED"]
        assert sorted(int(line.split()[4]) for line in lines[1:]) == sorted([first.pid, second.pid])
        assert all(line.split()[2] == "127.0.0.1" for line in lines[1:])
        assert cli_main(["--registry", redis_url, "services", "--json"]) == 0
        table = json.loads(capsys.readouterr().out)
        assert sorted(e["pid"] for e in table["calc"]) == sorted([first.pid, second.pid])
        assert cli_main(["--registry", redis_url, "call", "calc", "add", "1", "2"]) == 0
        assert capsys.readouterr().out.strip() == "3"
    finally:
        registry.close()


def test_a_killed_service_leaves_when_its_lease_expires(services, redis_url):
    proc = services("calc", "--registry", redis_url, "--lease-ttl", "1")
    registry = RedisRegistry(redis_url)
    try:
        wait_for(lambda: registry.instances("calc"), 20, "the service to register")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        killed = time.monotonic()
        wait_for(lambda: not registry.instances("calc"), 5, "the lease to expire")
        assert time.monotonic() - killed <= 1.5
    finally:
        registry.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_the_parent_moves_to_another_live_instance(api, services, redis_url):
    first = services("calc", "--registry", redis_url, "--lease-ttl", "1")
    registry = RedisRegistry(redis_url)
    try:
        wait_for(lambda: registry.instances("calc"), 20, "the first service to register")
        client = CLIENTS[api](ParentWorker.connect("calc", registry=redis_url))  # default heartbeats: 5 s
        client.start()
        try:
            assert client.call("where")[1] == first.pid
            second = services("calc", "--registry", redis_url, "--lease-ttl", "1")
            wait_for(lambda: len(registry.instances("calc")) == 2, 20, "the second service to register")
            in_flight = client.fire([("sleep", (30,))])
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=20)
            killed = time.monotonic()
            outcome, = in_flight(10)
            assert isinstance(outcome, WorkerCrashedError), outcome  # failed, not re-sent
            assert client.call("where", timeout=5)[1] == second.pid
            assert time.monotonic() - killed <= 1 + 1  # within the lease TTL + 1 s
        finally:
            client.close()
    finally:
        registry.close()


def test_a_service_keeps_serving_while_redis_is_down_and_registers_again():
    server = RedisServer().start()
    proc = subprocess.Popen([sys.executable, SERVICE, "calc", "--registry", server.url, "--lease-ttl", "1"])
    registry = RedisRegistry(server.url, timeout=0.3)
    try:
        wait_for(lambda: registry.instances("calc"), 20, "the service to register")
        worker = ParentWorker.connect("calc", registry=registry, heartbeat_interval=0.2, heartbeat_timeout=0.5)
        with worker:
            server.stop()
            for i in range(20):  # calls go on while Redis is down, through several heartbeats
                assert worker.call.add(i, 1) == i + 1
                time.sleep(0.05)
            server.start()
            wait_for(lambda: live_instances(registry, "calc"), 5, "the service to register again")
            assert worker.call.add(1, 1) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        registry.close()
        server.remove()


@given(sid=st.text(min_size=1), instance=st.text(alphabet="0123456789abcdef", min_size=1, max_size=16),
       host=st.text(min_size=1), port=st.integers(1, 65535), pid=st.integers(0, 2**31),
       key=st.one_of(st.none(), st.text(min_size=40, max_size=40)))
def test_a_lease_value_round_trips(sid, instance, host, port, pid, key):
    entry = InstanceEntry(sid, port, pid, "2026-01-01T00:00:00.000Z", instance, host, "box", key or None)
    assert InstanceEntry.from_lease(json.dumps(entry.to_lease())) == entry


@given(st.one_of(st.text(), st.integers(), st.lists(st.integers()),
                 st.dictionaries(st.sampled_from(["id", "instance", "host", "port", "pid"]),
                                 st.one_of(st.none(), st.text(), st.integers(-5, 70000), st.booleans()))))
def test_malformed_lease_values_parse_to_none_or_a_valid_entry(value):
    entry = InstanceEntry.from_lease(json.dumps(value))
    assert entry is None or (0 < entry.port < 65536 and entry.host and isinstance(entry.service_id, str))


@pytest.mark.parametrize("host, endpoint", [("10.1.2.3", "tcp://10.1.2.3:5000"), ("::1", "tcp://[::1]:5000"),
                                            ("box.example", "tcp://box.example:5000")])
def test_the_parent_dials_the_registered_host(host, endpoint):
    assert dial_endpoint(InstanceEntry("s", 5000, 1, "", "i", host)) == endpoint
    assert dial_endpoint(ServiceEntry("s", 5000, 1, "")) == "tcp://127.0.0.1:5000"  # the JSON file: loopback
