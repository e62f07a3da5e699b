"""CURVE on the ZeroMQ ends, in one process: admitted and refused clients, the handshake
monitor's verdicts, the ZAP handler's lifetime, and the option's checks."""
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from multifrost import AuthenticationError
from multifrost.transports import Curve, curve_keys, open_child_end, open_parent_end

KEYS = curve_keys()
SERVER, CLIENT, STRANGER = KEYS.new_keypair(), KEYS.new_keypair(), KEYS.new_keypair()


def server(authorized=frozenset([CLIENT[0]])):
    return Curve(*SERVER, authorized_keys=authorized)


def client(pair=CLIENT, server_key=SERVER[0]):
    return Curve(*pair, server_key=server_key)


def exchange(server_curve, client_curve, timeout=2.0):
    """Send one payload from a client to a server: 'delivered' or the AuthenticationError text."""
    options = {"curve": server_curve} if server_curve else {}
    child = open_child_end("tcp://127.0.0.1:0", bind=True, **options)
    parent = open_parent_end(child.endpoint, bind=False, **({"curve": client_curve} if client_curve else {}))
    try:
        parent.send_nowait(b"ping")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parent.check()
            item = child.recv_nowait()
            if item is not None:
                return "delivered"
            time.sleep(0.005)
        return "timeout"
    except AuthenticationError as exc:
        return str(exc)
    finally:
        parent.close()
        child.close()


def zap_threads():
    return [t for t in threading.enumerate() if t.name == "multifrost-zap"]


def test_an_authorized_client_is_admitted_and_the_zap_handler_stops_after():
    assert exchange(server(), client()) == "delivered"
    assert zap_threads() == []


def test_without_authorized_keys_any_client_knowing_the_server_key_is_admitted():
    assert exchange(server(authorized=None), client(STRANGER)) == "delivered"


def test_servers_with_and_without_authorized_keys_share_the_zap_handler():
    strict = open_child_end("tcp://127.0.0.1:0", bind=True, curve=server())
    try:
        assert exchange(server(authorized=None), client(STRANGER)) == "delivered"
        assert "refused" in exchange(server(), client(STRANGER))
    finally:
        strict.close()
    for _ in range(20):  # a handler stopped and started again at once
        assert exchange(server(), client()) == "delivered"
    assert zap_threads() == []


@pytest.mark.parametrize("case, expected", [
    ("stranger", "refused this client's CURVE key"),
    ("plain client", "this client does not use CURVE and the service does"),
    ("plain server", "this client uses CURVE"),
    ("wrong server key", "is its public key the one given"),
])
def test_refused_handshakes_are_authentication_errors(case, expected):
    server_curve, client_curve = {
        "stranger": (server(), client(STRANGER)),
        "plain client": (server(), None),
        "plain server": (None, client()),
        "wrong server key": (server(), client(server_key=STRANGER[0])),
    }[case]
    started = time.monotonic()
    assert expected in exchange(server_curve, client_curve)
    assert time.monotonic() - started < 1.0


def test_two_servers_keep_their_own_authorized_keys():
    first = open_child_end("tcp://127.0.0.1:0", bind=True, curve=server(frozenset([CLIENT[0]])))
    second = open_child_end("tcp://127.0.0.1:0", bind=True, curve=server(frozenset([STRANGER[0]])))
    try:
        assert len(zap_threads()) == 1
        assert exchange(server(frozenset([CLIENT[0]])), client()) == "delivered"
        assert "refused" in exchange(server(frozenset([STRANGER[0]])), client())
    finally:
        first.close()
        second.close()
    assert zap_threads() == []


def test_the_curve_option_is_checked():
    with pytest.raises(ValueError, match="must be a Curve, on tcp only"):
        open_child_end("memory://x", bind=True, curve=server())
    with pytest.raises(ValueError, match="must be a Curve"):
        open_child_end("tcp://127.0.0.1:0", bind=True, curve={"public_key": SERVER[0]})


def test_keys_are_read_from_files_or_given_as_text(tmp_path):
    public, secret = KEYS.write_keypair(tmp_path / "svc")
    pair = KEYS.load_keypair(secret)
    assert KEYS.load_public_key(public) == pair[0] == KEYS.load_public_key(pair[0].decode())
    with pytest.raises(ValueError, match="no secret key"):
        KEYS.load_keypair(public)
    with pytest.raises(ValueError, match="cannot read"):
        KEYS.load_keypair(tmp_path / "missing.key_secret")
    with pytest.raises(FileExistsError):
        KEYS.write_keypair(tmp_path / "svc")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "svc.key").write_bytes(public.read_bytes())
    assert KEYS.load_authorized_keys(tmp_path / "dir") == frozenset([pair[0]])


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=40, max_size=40))
def test_a_public_key_text_is_z85_or_refused(text):
    try:
        key = KEYS.load_public_key(text)
    except ValueError as exc:
        assert "CURVE public key" in str(exc)
    else:
        assert key == text.encode()
