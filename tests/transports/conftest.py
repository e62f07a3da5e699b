"""Fixtures for the transport conformance suite: one set of tests over every backend."""
from __future__ import annotations

import shutil
import tempfile
import threading
import uuid

import pytest

from multifrost.transports import open_child_end, open_parent_end

BACKENDS = ["tcp", "ipc", "inproc", "memory", "unix"]


class Ends:
    """Opens transport ends for one test and closes every one of them afterwards."""

    def __init__(self, backend: str, tmpdir: str) -> None:
        self.backend = backend
        self._tmpdir = tmpdir
        self._opened: list = []

    def address(self) -> str:
        """A fresh address to bind for this backend (tcp asks for a free port)."""
        if self.backend == "tcp":
            return "tcp://127.0.0.1:0"
        if self.backend in ("ipc", "unix"):
            return f"{self.backend}://{self._tmpdir}/{uuid.uuid4().hex[:8]}.sock"
        return f"{self.backend}://{uuid.uuid4().hex}"

    def parent(self, url: str, *, bind: bool, **options):
        end = open_parent_end(url, bind=bind, **options)
        self._opened.append(end)
        return end

    def child(self, url: str, *, bind: bool, **options):
        end = open_child_end(url, bind=bind, **options)
        self._opened.append(end)
        return end

    def pair(self, **options):
        """A bound child end and a parent end connected to it."""
        child = self.child(self.address(), bind=True, **options)
        parent = self.parent(child.endpoint, bind=False, **options)
        return parent, child

    def close_all(self) -> None:
        for end in self._opened:
            end.close()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def ends(backend):
    tmpdir = tempfile.mkdtemp(prefix="mft")  # short: ipc paths must fit in sun_path
    threads_before = set(threading.enumerate())
    made = Ends(backend, tmpdir)
    try:
        yield made
    finally:
        made.close_all()
        shutil.rmtree(tmpdir, ignore_errors=True)
    leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
