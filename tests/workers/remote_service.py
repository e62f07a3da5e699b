"""A connect-mode service for the multi-host tests: MathWorker with the network options from
the command line (``--registry``, ``--host``, ``--curve-secret-key``, ...)."""
import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from math_worker import MathWorker  # noqa: E402


class RemoteWorker(MathWorker):
    def where(self):
        """Which instance answered: (host name, pid)."""
        return [socket.gethostname(), os.getpid()]

    def spin(self, iterations):
        """CPU-bound work."""
        total = 0
        for i in range(iterations):
            total += i * i
        return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("service_id")
    parser.add_argument("--registry")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--advertise")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--curve-secret-key")
    parser.add_argument("--curve-authorized-keys")
    parser.add_argument("--lease-ttl", type=float)
    args = parser.parse_args()
    RemoteWorker(args.service_id, registry=args.registry, host=args.host, advertise=args.advertise,
                 insecure=args.insecure, curve_secret_key=args.curve_secret_key,
                 curve_authorized_keys=args.curve_authorized_keys, lease_ttl=args.lease_ttl).run()


if __name__ == "__main__":
    main()
