"""The service the multi-host benchmark runs: ``add`` for round trips, ``spin`` for CPU-bound work.

    python bench/_remote_service.py SERVICE_ID REGISTRY HOST [SECRET_KEY_FILE]
"""
import sys

from multifrost import ChildWorker


class RemoteBenchWorker(ChildWorker):
    def add(self, a, b):
        return a + b

    def spin(self, iterations):
        total = 0
        for i in range(iterations):
            total += i * i
        return total


if __name__ == "__main__":
    service_id, registry, host = sys.argv[1:4]
    secret = sys.argv[4] if len(sys.argv) > 4 else None
    RemoteBenchWorker(service_id, registry=registry, host=host, curve_secret_key=secret).run()
