"""The worker the end-to-end tests spawn (and serve in-process)."""
import asyncio
import os
import subprocess
import sys
import threading
import time

from multifrost import ChildWorker


class MathWorker(ChildWorker):
    limit = 5  # an attribute that is not callable

    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value

    def echo_all(self, *values):
        return list(values)

    def hold(self, path, seconds):
        """Create ``path``, then block a thread for ``seconds``."""
        open(path, "w").close()
        time.sleep(seconds)

    async def hold_loop(self, path, seconds):
        """Create ``path``, then block the event loop itself for ``seconds`` (on purpose)."""
        open(path, "w").close()
        time.sleep(seconds)

    def sleeper(self, seconds):
        """Start ``sleep SECONDS`` (in this worker's session) and return its pid."""
        return subprocess.Popen(["sleep", str(seconds)]).pid

    def length(self, value):
        return len(value)

    def make_bytes(self, n):
        return b"\0" * n

    def make_list(self, n):
        return [0] * n

    def backlog(self):
        """What this worker holds for peers that do not read: [bytes held, replies dropped]."""
        return [self._held.bytes_held, self._held.dropped]

    def fail(self, text):
        raise ValueError(text)

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    async def asleep(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    async def aadd(self, a, b):
        await asyncio.sleep(0)
        return a + b

    def wait_for(self, path, seconds):
        """Block until ``path`` exists (a test creates it), at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def say(self, text):
        print(text)
        return len(text)

    def warn(self, text):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return True

    def unencodable(self):
        return {1, 2}

    def pid(self):
        return os.getpid()

    def threads(self):
        return threading.active_count()

    def waits_by(self):
        """The class of the serving loop's selector, and whether it spins before sleeping."""
        selector = self._loop._selector
        return [type(selector).__name__, getattr(selector, "_spinner", None) is not None and selector._spinner.enabled]

    def crash(self, code):
        os.write(2, f"about to crash with {code}\n".encode())  # straight to the process's stderr
        os._exit(code)

    def _secret(self):
        return "never"


class OtherNamespace(MathWorker):
    namespace = "math"


if __name__ == "__main__":
    worker_class = OtherNamespace if os.environ.get("TEST_NAMESPACE") == "math" else MathWorker
    worker_class().run()
