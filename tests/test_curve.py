"""CURVE: keys made by ``multifrost keygen``, services that admit only authorized clients,
AuthenticationError (not a timeout) for a refused handshake, and no unprotected network bind."""
import os
import stat
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

from helpers import CLIENTS, wait_for, stop_all
from multifrost import AuthenticationError, MultifrostError, ParentWorker
from multifrost.cli import main as cli_main
from multifrost.registry import FileRegistry
from multifrost.service import ServiceConfigError, check_exposure
from multifrost.transports import Curve

SERVICE = os.path.join(os.path.dirname(__file__), "workers", "remote_service.py")



@pytest.fixture
def keys(tmp_path):
    """Keypairs made with the CLI: a server, an authorized client, a stranger."""
    made = {}
    (tmp_path / "authorized").mkdir()
    for name in ("server", "client", "stranger"):
        assert cli_main(["keygen", str(tmp_path / name)]) == 0
        made[name] = tmp_path / f"{name}.key_secret"
    os.link(tmp_path / "client.key", tmp_path / "authorized" / "client.key")
    made["authorized"] = tmp_path / "authorized"
    made["server_public"] = tmp_path / "server.key"
    return made


@pytest.fixture
def service(tmp_path):
    procs = []

    def start(service_id, *options, wait=True):
        proc = subprocess.Popen([sys.executable, SERVICE, service_id, *options], stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        if wait:
            wait_for(lambda: FileRegistry().lookup(service_id) is not None or proc.poll() is not None, 20,
                     "the service to register")
            assert proc.poll() is None, proc.stderr.read()
        return proc

    yield start
    stop_all(procs)


def test_keygen_writes_zeromq_certificates_and_never_overwrites(tmp_path, capsys):
    import zmq.auth
    assert cli_main(["keygen", str(tmp_path / "alice")]) == 0
    public, secret = tmp_path / "alice.key", tmp_path / "alice.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub, none = zmq.auth.load_certificate(public)
    pub2, sec = zmq.auth.load_certificate(secret)
    assert none is None and pub == pub2 and len(sec) == 40
    assert str(public) in capsys.readouterr().out
    assert cli_main(["keygen", str(tmp_path / "alice")]) == 1
    assert "exists" in capsys.readouterr().err
    assert zmq.auth.load_certificate(secret) == (pub2, sec)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".multifrost-keygen")]


@pytest.mark.parametrize("api", ["sync", "async"])
def test_an_authorized_client_calls_over_curve(api, keys, service):
    service("calc", "--curve-secret-key", str(keys["server"]), "--curve-authorized-keys", str(keys["authorized"]))
    client = CLIENTS[api](ParentWorker.connect("calc", curve_secret_key=keys["client"],
                                               curve_server_key=keys["server_public"]))
    client.start()
    try:
        assert client.call("add", 2, 3) == 5
    finally:
        client.close()


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("who", ["stranger", "plain", "wrong server key"])
def test_a_refused_client_gets_authentication_error_within_a_second(api, who, keys, service):
    service("calc", "--curve-secret-key", str(keys["server"]), "--curve-authorized-keys", str(keys["authorized"]))
    options = {
        "stranger": {"curve_secret_key": keys["stranger"], "curve_server_key": keys["server_public"]},
        "plain": {},
        "wrong server key": {"curve_secret_key": keys["client"], "curve_server_key": keys["stranger"].with_suffix(".key")},
    }[who]
    client = CLIENTS[api](ParentWorker.connect("calc", timeout=5, **options))
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        client.start()
    assert time.monotonic() - started < 1.0
    assert isinstance(info.value, MultifrostError)


def test_a_curve_client_of_a_plain_service_gets_authentication_error(keys, service):
    service("calc")
    worker = ParentWorker.connect("calc", curve_secret_key=keys["client"], curve_server_key=keys["server_public"])
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="CURVE"):
        worker.start()
    assert time.monotonic() - started < 1.0


def test_without_authorized_keys_any_client_knowing_the_server_key_is_admitted(keys, service):
    service("calc", "--curve-secret-key", str(keys["server"]))
    with ParentWorker.connect("calc", curve_server_key=keys["server_public"]) as worker:  # a fresh client keypair
        assert worker.call.add(1, 1) == 2


def test_a_network_bind_without_curve_is_refused_in_one_line(service):
    proc = service("calc", "--host", "0.0.0.0", wait=False)
    assert proc.wait(timeout=20) == 1
    err = proc.stderr.read().strip().splitlines()
    assert len(err) == 1 and "cannot start: refusing to serve on 0.0.0.0 without CURVE" in err[0]
    assert "multifrost keygen" in err[0] and "insecure=True" in err[0]
    assert FileRegistry().lookup("calc") is None


def test_authorized_keys_need_the_service_key(keys, service):
    proc = service("calc", "--curve-authorized-keys", str(keys["authorized"]), wait=False)
    assert proc.wait(timeout=20) == 1
    assert "curve_authorized_keys needs curve_secret_key" in proc.stderr.read()


@given(st.ip_addresses(v=4))
def test_only_loopback_binds_go_without_curve(address):
    host = str(address)
    if address.is_loopback:
        check_exposure(host, None, insecure=False)
    else:
        with pytest.raises(ServiceConfigError, match="multifrost keygen"):
            check_exposure(host, None, insecure=False)
    check_exposure(host, None, insecure=True)
    check_exposure(host, Curve(b"p" * 40, b"s" * 40), insecure=False)


@pytest.mark.parametrize("host", ["localhost", "::1", "127.0.0.1"])
def test_loopback_names_are_loopback(host):
    check_exposure(host, None, insecure=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.org", "10.0.0.1"])
def test_everything_else_is_exposed(host):
    with pytest.raises(ServiceConfigError):
        check_exposure(host, None, insecure=False)


def test_the_cli_calls_and_pings_over_curve(keys, service, capsys):
    service("calc", "--curve-secret-key", str(keys["server"]), "--curve-authorized-keys", str(keys["authorized"]))
    curve = ["--curve-secret-key", str(keys["client"]), "--curve-server-key", str(keys["server_public"])]
    assert cli_main(["call", "calc", "add", "40", "2", *curve]) == 0
    assert capsys.readouterr().out.strip() == "42"
    assert cli_main(["ping", "calc", *curve]) == 0
    assert "heartbeat round trip" in capsys.readouterr().out
    assert cli_main(["call", "calc", "add", "1", "2", "--curve-secret-key", str(keys["stranger"]),
                     "--curve-server-key", str(keys["server_public"])]) == 1
    assert "refused this client's CURVE key" in capsys.readouterr().err
