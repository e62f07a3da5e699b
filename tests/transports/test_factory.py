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
