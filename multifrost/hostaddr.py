"""This host's addresses, without sending anything: is a bind address loopback, and which
address should clients dial when a service binds every interface."""
from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915
_ANY = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a service on this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it resolves to whatever the network says


def binds_everything(host: str) -> bool:
    """Whether ``host`` means every interface."""
    return host in _ANY


def _default_route_interface() -> str | None:
    """The interface of the IPv4 default route, from /proc/net/route."""
    try:
        with open("/proc/net/route") as routes:
            next(routes, None)
            for line in routes:
                fields = line.split()
                if len(fields) > 1 and fields[1] == "00000000":
                    return fields[0]
    except OSError:
        pass
    return None


def _ipv4_of(interface: str) -> str | None:
    """The IPv4 address of ``interface`` (SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", interface.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(answer[20:24])


def primary_address() -> str:
    """This host's main IPv4 address: the default route's interface's, else the first
    non-loopback interface's, else what the host name resolves to."""
    names = [name for _, name in socket.if_nameindex()]
    preferred = _default_route_interface()
    for name in ([preferred] if preferred else []) + names:
        address = _ipv4_of(name)
        if address is not None and not ipaddress.ip_address(address).is_loopback:
            return address
    return socket.gethostbyname(socket.gethostname())


def advertised_host(bound: str, advertise: str | None) -> str:
    """The address clients should dial: ``advertise``, else the bound address, else (bound to
    every interface) this host's primary address."""
    if advertise:
        return advertise
    return primary_address() if binds_everything(bound) else bound
