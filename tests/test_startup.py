"""A worker's start-up loads only what serving needs (spawn -> first result, issue 14)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from multifrost import ParentWorker

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES_WORKER = str(ROOT / "tests" / "workers" / "modules_worker.py")

#: Loaded by no spawned worker's start, whatever its transport: the value classes of the
#: protocol, the codec limits and the transports are not dataclasses; the worker tells its
#: coroutine and generator methods by their code flags, without ``inspect``; a worker with plain
#: methods only is served without asyncio (tests/test_plain_worker.py has more on that).
NEVER = ("dataclasses", "inspect", "asyncio")
#: ... and per transport: a unix worker never loads pyzmq; a tcp one loads no CURVE/ZAP pieces.
BY_TRANSPORT = {
    "unix": ("zmq", "multifrost.transports.zeromq"),
    "tcp": ("multifrost.transports.curve", "zmq.auth", "zmq.asyncio"),
}


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_spawned_worker_starts_without_what_serving_does_not_need(transport):
    names = NEVER + BY_TRANSPORT[transport]
    worker = ParentWorker.spawn(MODULES_WORKER, transport=transport, heartbeat_interval=0).start()
    try:
        assert worker.call.loaded(list(names)) == []
        assert worker.call.loaded(["multifrost.child"]) == ["multifrost.child"]  # the check does see modules
    finally:
        worker.close()


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:0", "unix://{tmp}/t.sock"])
def test_the_transport_ends_work_without_loading_asyncio(url, tmp_path):
    """Ends opened, connected and used with the blocking helpers leave asyncio unloaded: a
    worker that never awaits need not pay for importing it (the awaitable helpers load it)."""
    url = url.format(tmp=tmp_path)
    code = (
        "import sys\n"
        "from multifrost.transports import open_child_end, open_parent_end, shutdown\n"
        f"child = open_child_end({url!r}, bind=True)\n"
        "parent = open_parent_end(child.endpoint, bind=False)\n"
        "parent.send_blocking(b'hi', timeout=30)\n"
        "peer, payload = child.recv_blocking(timeout=30)\n"
        "assert payload == b'hi', payload\n"
        "child.send_blocking(peer, b'back', timeout=30)\n"
        "assert parent.recv_blocking(timeout=30) == b'back'\n"
        "parent.close(); child.close(); shutdown()\n"
        "assert 'asyncio' not in sys.modules, 'asyncio was imported'\n"
        "import asyncio\n"
        "async def main():\n"
        "    child = open_child_end(url, bind=True)\n"
        "    parent = open_parent_end(child.endpoint, bind=False)\n"
        "    await parent.send(b'again', timeout=30)\n"
        "    assert (await child.recv(timeout=30))[1] == b'again'\n"
        "    parent.close(); child.close()\n"
        f"url = {url.replace('t.sock', 'u.sock')!r}\n"
        "asyncio.run(main())  # the awaitable helpers load it themselves\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
