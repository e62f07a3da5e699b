"""The worker of bench/streams.py: generators of small and 64 KiB items, their call twins, and a
cancellable sleeper that notes when it saw CancelledError (this host's monotonic clock)."""
import asyncio
import time

from multifrost import ChildWorker


class StreamBenchWorker(ChildWorker):
    def __init__(self):
        super().__init__()
        self.marks = {}

    def ints(self, n):
        yield from range(n)

    def add(self, a, b):
        return a + b

    def blobs(self, n, size):
        item = b"x" * size
        for _ in range(n):
            yield item

    def blob(self, size):
        return b"x" * size

    async def sleeper(self, key):
        self.marks[key] = {"started": time.monotonic()}
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.marks[key]["cancelled"] = time.monotonic()
            raise

    def endless(self, key):
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            self.marks[key] = {"closed": time.monotonic()}

    def mark(self, key):
        return self.marks.get(key)


if __name__ == "__main__":
    StreamBenchWorker().run()
