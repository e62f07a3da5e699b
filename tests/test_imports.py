"""Only multifrost/transports/ may import zmq, and its memory and unix backends may not."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "multifrost"
ZMQ_FREE = {"transports/memory.py", "transports/unix.py", "transports/unix_conn.py", "transports/unix_path.py"}


def imports_zmq(path: pathlib.Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "zmq" or name.startswith("zmq.") for name in names):
            return True
    return False


def test_only_the_transports_import_zmq():
    modules = sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.pyx"))
    assert PACKAGE / "transports" / "zeromq.py" in modules
    offenders = []
    for path in modules:
        relative = path.relative_to(PACKAGE).as_posix()
        allowed = relative.startswith("transports/") and relative not in ZMQ_FREE
        if not path.suffix == ".pyx" and imports_zmq(path) and not allowed:
            offenders.append(relative)
    assert offenders == []
    assert imports_zmq(PACKAGE / "transports" / "zeromq.py")  # the check does see imports


@pytest.mark.parametrize("url", ["memory://x", "unix://{tmp}/x.sock"])
def test_zmq_free_transports_run_without_loading_zmq(url, tmp_path):
    url = url.format(tmp=tmp_path)
    code = (
        "import sys\n"
        "from multifrost.transports import open_child_end, open_parent_end\n"
        f"child = open_child_end({url!r}, bind=True)\n"
        f"parent = open_parent_end({url!r}, bind=False)\n"
        "assert parent.send_nowait(b'hi')\n"
        "assert child.recv_blocking(timeout=10)[1] == b'hi'\n"
        "parent.close(); child.close()\n"
        "assert 'zmq' not in sys.modules, 'zmq was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_worker_does_not_import_the_parent_side():
    """``from multifrost import ChildWorker`` (what a worker script does) loads no parent-side modules:
    they would only slow every worker's start."""
    code = (
        "import sys\n"
        "from multifrost import ChildWorker\n"
        "import multifrost.runner\n"
        "loaded = sorted(m for m in ('multifrost.parent', 'multifrost.pool', 'multifrost.channel',\n"
        "                            'multifrost.targets', 'multifrost.registry') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "import multifrost\n"
        "assert multifrost.ParentWorker.__name__ == 'ParentWorker'  # still there on first use\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=60)
    assert result.returncode == 0, result.stderr


#: What serving a call never needs: the parent side, the registries, tracing, streams, the CLI.
NOT_FOR_A_WORKER = (
    "multifrost.parent", "multifrost.pool", "multifrost.channel", "multifrost.channel_sync",
    "multifrost.channel_async", "multifrost.channel_base", "multifrost.streams", "multifrost.proxy",
    "multifrost.targets", "multifrost.target", "multifrost.process", "multifrost.options", "multifrost.metrics",
    "multifrost.circuit", "multifrost.heartbeats", "multifrost.exit_hooks", "multifrost.registry",
    "multifrost.registries", "multifrost.registry_redis", "multifrost.registry_lock", "multifrost.service",
    "multifrost.service_pool", "multifrost.tracing", "multifrost.child_streams", "multifrost.cli",
    "multifrost.transports.curve", "multifrost.transports.memory", "zmq.asyncio",
)
#: ... and, with the compiled codec, its pure-Python twin (both share _codec_slow).
if __import__("multifrost.codec", fromlist=["IMPLEMENTATION"]).IMPLEMENTATION != "python":
    NOT_FOR_A_WORKER += ("multifrost._codec_fallback",)


@pytest.mark.parametrize("url, other_transports", [
    ("tcp://127.0.0.1:0", ("multifrost.transports.unix",)),
    ("unix://{tmp}/w.sock", ("multifrost.transports.zeromq", "zmq")),
])
def test_a_worker_serving_a_call_loads_only_what_serving_needs(url, other_transports, tmp_path):
    """A bare child start (the runner's imports, an end, serve, one call answered) loads none
    of NOT_FOR_A_WORKER: a worker's start-up pays only for what serving needs."""
    url = url.format(tmp=tmp_path)
    code = (
        "import asyncio, sys\n"
        "from multifrost import ChildWorker\n"
        "import multifrost.runner\n"
        "from multifrost.transports import open_child_end, open_parent_end\n"
        "from multifrost import protocol\n"
        "from multifrost.codec import pack_message, unpack_message\n"
        "class W(ChildWorker):\n"
        "    def add(self, a, b):\n"
        "        return a + b\n"
        "async def main():\n"
        f"    end = open_child_end({url!r}, bind=True)\n"
        "    parent = open_parent_end(end.endpoint, bind=False)\n"
        "    worker = W()\n"
        "    serving = asyncio.ensure_future(worker.serve(end))\n"
        "    parent.send_nowait(pack_message(protocol.call('add', [1, 2])))\n"
        "    reply = await parent.recv(timeout=30)\n"
        "    assert unpack_message(reply)['result'] == 3, reply\n"
        "    worker.stop()\n"
        "    await serving\n"
        "    parent.close(); end.close()\n"
        "asyncio.run(main())\n"
        f"loaded = sorted(m for m in {NOT_FOR_A_WORKER + other_transports!r} if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=60)
    assert result.returncode == 0, result.stderr
