"""Hosts made here: Linux network namespaces joined by a bridge, with a private range that
exists only inside them (root required). Nothing is added to the caller's own namespace, so
no traffic can leave these namespaces.

Topology: a ``hub`` namespace holds bridge ``br0`` (address ``.254``, where Redis runs); each
host namespace gets a veth pair, ``eth0`` inside it (address ``.1``, ``.2``, ...) and the peer
enslaved to the bridge in the hub.
"""
from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess

ENABLE_HINT = "network namespace tests need root and iproute2 (run scripts/test.sh as root, as CI does)"


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


def _unused_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no route or address of this machine touches."""
    taken = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    taken += subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{random.randint(200, 207)}.{random.randint(0, 255)}.0/24")
        if f"{net.network_address}".rsplit(".", 1)[0] + "." not in taken:
            return net
    raise RuntimeError("no unused 10.200.0.0/13 subnet found")


class Hosts:
    """Namespaces ``names`` plus the hub; ``address[name]``, ``run(name, argv)``, ``remove()``."""

    def __init__(self, names: tuple[str, ...] = ("a", "b", "c")) -> None:
        tag = f"mf{os.getpid()}{random.randint(0, 999)}"
        self.subnet = _unused_subnet()
        base = self.subnet.network_address
        self.hub = f"{tag}-hub"
        self.hub_address = str(base + 254)
        self.netns = {name: f"{tag}-{name}" for name in names}
        self.address = {name: str(base + i + 1) for i, name in enumerate(names)}
        self._made: list[str] = []
        try:
            self._create()
        except BaseException:
            self.remove()
            raise

    def _create(self) -> None:
        prefix = self.subnet.prefixlen
        self._add(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{self.hub_address}/{prefix}", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for i, (name, ns) in enumerate(self.netns.items()):
            self._add(ns)
            _ip("-n", self.hub, "link", "add", f"port{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.hub, "link", "set", f"port{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address[name]}/{prefix}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def argv(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` run inside host ``name`` (or ``"hub"``)."""
        return ["ip", "netns", "exec", self.hub if name == "hub" else self.netns[name], *argv]

    def run(self, name: str, argv: list[str], **popen) -> subprocess.Popen:
        return subprocess.Popen(self.argv(name, argv), **popen)

    def remove(self) -> None:
        """Delete every namespace made (their veths and the bridge go with them)."""
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made.clear()
