"""A Python worker for the Node.js parent (peer.js parent) in the interop matrix.

Spawn mode (the Node parent runs ``sh -c "python3 py_worker.py"``, no ``--worker``) or, with
``--service-id ID``, a connect-mode service registered in ``$MULTIFROST_REGISTRY``.
The namespace comes from ``MULTIFROST_NAMESPACE`` (default ``default``).
"""
import asyncio
import os
import sys

from multifrost import ChildWorker


class InteropWorker(ChildWorker):
    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value

    def echo_all(self, *args):
        return list(args)

    def type_of(self, value):
        """The Python type the value arrived as."""
        return type(value).__name__

    def show(self, value):
        """repr() of the value as it arrived, for exact checks (float vs int, key types, tzinfo)."""
        return repr(value)

    def fail(self, message):
        raise ValueError(message)

    def say(self, text, stream="stdout"):
        print(text, file=sys.stderr if stream == "stderr" else sys.stdout)

    def rows(self, n):
        """A generator method: a v4 parent gets its items as one list."""
        for i in range(n):
            yield i

    async def pause(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    def _private(self):
        return "never reachable"


if __name__ == "__main__":
    service_id = sys.argv[sys.argv.index("--service-id") + 1] if "--service-id" in sys.argv else None
    InteropWorker(service_id, namespace=os.environ.get("MULTIFROST_NAMESPACE")).run()
