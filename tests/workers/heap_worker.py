"""A worker that says whether its process keeps freed memory (multifrost.heap)."""
from multifrost import ChildWorker, heap


class HeapWorker(ChildWorker):
    def echo(self, value):
        return value

    def heap_state(self):
        return [heap.decided, heap.kept]


if __name__ == "__main__":
    HeapWorker().run()
