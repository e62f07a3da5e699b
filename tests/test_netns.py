"""Services on several hosts: network namespaces A, B, C joined by a bridge, Redis in the hub.

Services run in A and C, parents in B, every one a real process started with ``ip netns
exec``; all traffic stays inside these namespaces.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

import netns
import redis_server

WORKERS = os.path.join(os.path.dirname(__file__), "workers")
SERVICE = os.path.join(WORKERS, "remote_service.py")
CLIENT = os.path.join(WORKERS, "netns_client.py")
TTL = 1.0


@pytest.fixture(scope="module")
def hosts():
    if os.environ.get("CI") == "true":
        assert netns.available(), netns.ENABLE_HINT
        assert redis_server.available(), redis_server.ENABLE_HINT
    elif not netns.available():
        pytest.skip(netns.ENABLE_HINT)
    elif not redis_server.available():
        pytest.skip(redis_server.ENABLE_HINT)
    made = netns.Hosts(("a", "b", "c"))
    made.redis = redis_server.RedisServer(host=made.hub_address, netns=made.hub)
    try:
        made.redis.start()
        yield made
    finally:
        made.redis.remove()
        made.remove()


@pytest.fixture
def cluster(hosts, tmp_path):
    """Start services and clients in the namespaces; every process is stopped after the test."""
    hosts.redis.flush()
    procs = []

    class Cluster:
        url = hosts.redis.url
        keys = {}

        def service(self, where, *options, service_id="calc"):
            proc = hosts.run(where, [sys.executable, SERVICE, service_id, "--registry", self.url,
                                     "--lease-ttl", str(TTL), *options], stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            return proc

        def client(self, where, mode, *options, service_id="calc"):
            proc = hosts.run(where, [sys.executable, CLIENT, mode, service_id, "--registry", self.url, *options],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            return proc

        def registered(self, count, timeout=20.0):
            """Wait until ``count`` instances hold leases; returns their lease values."""
            deadline = time.monotonic() + timeout
            while True:
                keys = (hosts.redis.command("--no-raw", "KEYS", "multifrost:service:calc:*") or b"").split()
                if len([k for k in keys if b"multifrost" in k]) == count:
                    values = [hosts.redis.command("GET", k.strip(b'"').decode()) for k in keys if b"multifrost" in k]
                    return [json.loads(v) for v in values]
                assert time.monotonic() < deadline, f"{count} instance(s) did not register: {keys}"
                time.sleep(0.05)

    for name in ("server", "client", "stranger"):
        subprocess.run([sys.executable, "-m", "multifrost", "keygen", str(tmp_path / name)], check=True,
                       capture_output=True)
        Cluster.keys[name] = str(tmp_path / f"{name}.key_secret")
    (tmp_path / "authorized").mkdir()
    os.link(tmp_path / "client.key", tmp_path / "authorized" / "client.key")
    Cluster.keys["authorized"] = str(tmp_path / "authorized")
    yield Cluster()
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=20)


def secure(cluster, host="0.0.0.0"):
    return ["--host", host, "--curve-secret-key", cluster.keys["server"],
            "--curve-authorized-keys", cluster.keys["authorized"]]


def answer(proc, timeout=30):
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


class Lines:
    """A client's reports, read by a thread so the test can wait with a timeout."""

    def __init__(self, proc):
        self.proc = proc
        self.queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.queue.put(json.loads(line))
        self.queue.put(None)

    def next(self, timeout=10):
        item = self.queue.get(timeout=timeout)
        assert item is not None, "the client exited"
        return item

    def until(self, deadline_s):
        """Every report until ``deadline_s`` seconds from now."""
        end = time.monotonic() + deadline_s
        found = []
        while (left := end - time.monotonic()) > 0:
            try:
                found.append(self.next(timeout=left))
            except queue.Empty:
                break
        return found

    def stop(self):
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        reports = []
        while (item := self.queue.get(timeout=20)) is not None:
            reports.append(item)
        self.thread.join()
        return reports


def test_a_service_in_a_is_called_from_b_over_curve(hosts, cluster):
    service = cluster.service("a", *secure(cluster))
    lease, = cluster.registered(1)
    assert lease["host"] == hosts.address["a"]  # bound to 0.0.0.0: advertises A's own address
    assert lease["pid"] == service.pid and lease["curve_public_key"]
    result = answer(cluster.client("b", "call", "--curve-secret-key", cluster.keys["client"]))
    assert result["answer"][1] == service.pid
    assert result["endpoint"] == f"tcp://{hosts.address['a']}:{lease['port']}"


def test_an_unauthorized_client_in_b_gets_authentication_error(cluster):
    cluster.service("a", *secure(cluster))
    cluster.registered(1)
    result = answer(cluster.client("b", "call", "--curve-secret-key", cluster.keys["stranger"]))
    assert result["error"] == "AuthenticationError", result
    assert result["elapsed"] < 1.0
    plain = answer(cluster.client("b", "call", "--curve-server-key", "0" * 40))
    assert plain["error"] == "AuthenticationError", plain


def test_an_unprotected_service_outside_loopback_refuses_to_start(hosts, cluster):
    refused = cluster.service("a", "--host", hosts.address["a"])
    assert refused.wait(timeout=20) == 1
    err = refused.stderr.read().strip().splitlines()
    assert len(err) == 1 and "without CURVE" in err[0] and "multifrost keygen" in err[0]
    insecure = cluster.service("a", "--host", hosts.address["a"], "--insecure")
    lease, = cluster.registered(1)
    assert lease["curve_public_key"] is None
    assert answer(cluster.client("b", "call"))["answer"][1] == insecure.pid


def test_kill_9_in_a_moves_the_pool_in_b_to_c(cluster):
    doomed, survivor = cluster.service("a", *secure(cluster)), cluster.service("c", *secure(cluster))
    cluster.registered(2)
    lines = Lines(cluster.client("b", "pool", "--curve-secret-key", cluster.keys["client"]))
    assert lines.next(timeout=30)["ready"] == sorted([doomed.pid, survivor.pid])
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=20)
    killed = time.monotonic()
    reports = lines.until(TTL + 1 + 1.0)
    later = [r for r in reports if r["t"] > killed + TTL + 1]
    assert later, f"no call started after the lease expired: {reports[-5:]}"
    assert all(r.get("pid") == survivor.pid for r in later), later
    assert all(r["took"] < 1.5 for r in reports)  # nothing hangs: failures are quick too
    assert lines.stop()[-1] == {"done": True}


def test_redis_restarted_mid_run_nothing_hangs(hosts, cluster):
    a, c = cluster.service("a", *secure(cluster)), cluster.service("c", *secure(cluster))
    cluster.registered(2)
    lines = Lines(cluster.client("b", "pool", "--curve-secret-key", cluster.keys["client"]))
    assert lines.next(timeout=30)["ready"] == sorted([a.pid, c.pid])
    hosts.redis.stop()
    down = lines.until(2 * TTL)
    assert down and not [r for r in down if "pid" not in r], down[-5:]  # the pool keeps calling both instances
    assert {r["pid"] for r in down} == {a.pid, c.pid}
    hosts.redis.start()
    assert {lease["pid"] for lease in cluster.registered(2, timeout=5)} == {a.pid, c.pid}  # registered again
    after = lines.until(0.5)
    assert after and not [r for r in after if "pid" not in r], [r for r in after if "pid" not in r]
    assert lines.stop()[-1] == {"done": True}
