"""The worker that ``multifrost demo`` spawns: a few small methods to call.

Spawn mode is what the demo uses. ``python -m multifrost._demo_worker --service ID`` runs
it in connect mode instead, registered as ``ID``, to try ``multifrost call ID add 1 2``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

if __name__ == "__main__" and not __package__:
    # Started as a script (how a parent spawns it), sys.path[0] is this package's own
    # folder, whose modules would shadow top-level names; put the folder that holds the
    # package there instead, so that `import multifrost` finds this very package.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from multifrost import ChildWorker  # noqa: E402  (after the sys.path fix above)


class DemoWorker(ChildWorker):
    """Arithmetic, echoes, an async method, one that raises and one that takes its time."""

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def multiply(self, a: Any, b: Any) -> Any:
        return a * b

    def divide(self, a: Any, b: Any) -> Any:
        return a / b

    def fib(self, n: int) -> int:
        a, b = 0, 1
        for _ in range(n):
            a, b = b, a + b
        return a

    def echo(self, value: Any) -> Any:
        return value

    def wire_types(self) -> dict[str, Any]:
        """One value of each kind that crosses the wire."""
        return {
            "none": None,
            "bool": True,
            "int": -(2**63),
            "float": 2.5,
            "str": "héllo",
            "bytes": b"\x00\xff",
            "list": [1, [2, 3]],
            "map": {"nested": {"x": 1}},
            "datetime": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        }

    async def greet(self, name: str) -> str:
        await asyncio.sleep(0)
        return f"Hello, {name}!"

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The multifrost demo worker.")
    parser.add_argument("--service", metavar="ID", help="run in connect mode, registered as ID")
    args, _ = parser.parse_known_args(argv)  # a spawning parent may add --worker
    if args.service:
        DemoWorker(service_id=args.service).run()
    else:
        DemoWorker().run()


if __name__ == "__main__":
    main()
