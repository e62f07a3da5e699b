"""A Python worker for node_parent.js: subclass ChildWorker, define methods, call run().

The Node parent starts it with COMLINK_ZMQ_PORT set (no --worker argument is needed);
what the methods print reaches the parent as STDOUT/STDERR messages.
"""
from multifrost import ChildWorker


class ExampleWorker(ChildWorker):
    def add(self, a, b):
        return a + b

    def greet(self, name):
        return f"Hello, {name}, from Python"

    def stats(self, numbers):
        return {"count": len(numbers), "mean": sum(numbers) / len(numbers)}

    def hello(self):
        print("hello from the Python worker")

    def fail(self):
        raise ValueError("something went wrong in Python")


if __name__ == "__main__":
    ExampleWorker().run()
