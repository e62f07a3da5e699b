"""Endpoint parsing, options, and the memory registry's errors."""
from __future__ import annotations

import uuid

import pytest

from multifrost.errors import TransportError
from multifrost.transports import Endpoint, open_child_end, open_parent_end, parse_endpoint


@pytest.mark.parametrize(
    "url, endpoint",
    [
        ("tcp://127.0.0.1:5555", Endpoint("tcp", host="127.0.0.1", port=5555)),
        ("tcp://localhost:0", Endpoint("tcp", host="localhost", port=0)),
        ("tcp://[::1]:80", Endpoint("tcp", host="::1", port=80)),
        ("tcp://0.0.0.0:1024", Endpoint("tcp", host="0.0.0.0", port=1024)),
        ("ipc:///tmp/x.sock", Endpoint("ipc", name="/tmp/x.sock")),
        ("inproc://name", Endpoint("inproc", name="name")),
        ("memory://name", Endpoint("memory", name="name")),
        ("unix:///tmp/x.sock", Endpoint("unix", name="/tmp/x.sock")),
    ],
)
def test_parse_good_endpoints(url, endpoint):
    assert parse_endpoint(url) == endpoint
    assert str(endpoint) == url


@pytest.mark.parametrize(
    "url, reason",
    [
        ("udp://127.0.0.1:5", "unknown scheme"),
        ("127.0.0.1:5555", "missing scheme"),
        ("tcp://127.0.0.1", "missing port"),
        ("tcp://127.0.0.1:", "missing port"),
        ("tcp://127.0.0.1:70000", "out of range"),
        ("tcp://127.0.0.1:http", "not a number"),
        ("tcp://*:5555", "use 0.0.0.0 explicitly"),
        ("tcp://:5555", "missing host"),
        ("tcp://::1:5555", "brackets"),
        ("tcp://[nonsense]:5555", "not an IPv6 address"),
        ("ipc://", "empty path"),
        ("ipc:///" + "d" * 200, "too long for a Unix socket"),
        ("inproc://", "empty name"),
        ("memory://", "empty name"),
        ("unix://", "empty path"),
        ("unix://@abstract", "abstract sockets are not accepted"),
        ("unix:///" + "d" * 200, "too long for a Unix socket"),
    ],
)
def test_bad_endpoints_name_the_string_and_the_problem(url, reason):
    with pytest.raises(ValueError) as info:
        parse_endpoint(url)
    assert repr(url) in str(info.value) and reason in str(info.value)
    with pytest.raises(ValueError, match=reason):
        open_child_end(url, bind=True)


def test_connect_to_port_zero_is_refused():
    with pytest.raises(ValueError, match="port 0"):
        open_parent_end("tcp://127.0.0.1:0", bind=False)


def test_unknown_and_bad_options_are_refused():
    with pytest.raises(TypeError, match="hwm"):
        open_child_end("memory://x", bind=True, hwm=5)
    with pytest.raises(ValueError, match="sndhwm"):
        open_child_end("memory://x", bind=True, sndhwm=-1)


def test_memory_bind_taken_name_is_address_in_use():
    name = f"memory://{uuid.uuid4().hex}"
    with open_child_end(name, bind=True):
        with pytest.raises(TransportError, match="address in use"):
            open_parent_end(name, bind=True)
    with open_parent_end(name, bind=True):  # free again once closed
        pass


def test_memory_connect_to_unbound_name_names_it():
    name = f"memory://{uuid.uuid4().hex}"
    with pytest.raises(TransportError, match=name):
        open_parent_end(name, bind=False)
    with open_child_end(name, bind=True):
        with pytest.raises(TransportError, match="another child end"):
            open_child_end(name, bind=False)


def test_zeromq_bind_conflict_is_a_transport_error():
    with open_child_end("tcp://127.0.0.1:0", bind=True) as first:
        with pytest.raises(TransportError, match="cannot bind"):
            open_child_end(first.endpoint, bind=True)


def test_unix_bind_and_connect_errors_name_the_endpoint(tmp_path):
    url = f"unix://{tmp_path}/w.sock"
    with pytest.raises(TransportError, match=f"cannot connect to {url}"):
        open_parent_end(url, bind=False)
    with open_child_end(url, bind=True):
        assert oct((tmp_path / "w.sock").stat().st_mode & 0o777) == oct(0o600)
        with pytest.raises(TransportError, match="address in use"):
            open_parent_end(url, bind=True)
    assert not (tmp_path / "w.sock").exists()  # a bound end removes its socket file
    (tmp_path / "plain").write_text("not a socket")
    with pytest.raises(TransportError, match="not a socket"):
        open_child_end(f"unix://{tmp_path}/plain", bind=True)


def test_unix_bind_replaces_a_socket_file_left_behind(tmp_path):
    import socket

    path = str(tmp_path / "stale.sock")
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(path)
    leftover.close()  # the file stays, nothing listens
    with open_child_end(f"unix://{path}", bind=True) as child:
        with open_parent_end(child.endpoint, bind=False) as parent:
            parent.send_blocking(b"hi", timeout=10)
            assert child.recv_blocking(timeout=10)[1] == b"hi"
