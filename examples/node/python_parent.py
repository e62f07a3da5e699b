"""Call the Node.js worker (worker.js) from Python.

Run from anywhere once `npm install` was done in this folder: ``python3 python_parent.py``.
"""
import shutil
from pathlib import Path

from multifrost import ParentWorker, RemoteCallError

HERE = Path(__file__).resolve().parent


def main() -> None:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH: install Node.js 20+")
    # No --worker argument is passed to a non-Python script; the worker reads COMLINK_ZMQ_PORT.
    with ParentWorker.spawn("worker.js", executable=node, cwd=str(HERE), default_timeout=10.0) as worker:
        print(f"add(2, 3) = {worker.call.add(2, 3)}")
        print(f"greet('Ada') = {worker.call.greet('Ada')!r}")
        print(f"sha256(b'multifrost') = {worker.call.sha256(b'multifrost')!r}")  # bytes -> Buffer
        try:
            worker.call.fail()
        except RemoteCallError as exc:  # a Node worker sends the error message only
            print(f"fail: {exc!r}")


if __name__ == "__main__":
    main()
