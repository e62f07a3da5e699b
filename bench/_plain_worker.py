"""A multifrost child with plain methods only: served without asyncio (import-time and spawn benchmarks)."""
from multifrost import ChildWorker


class PlainAddWorker(ChildWorker):
    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value


if __name__ == "__main__":
    PlainAddWorker().run()
