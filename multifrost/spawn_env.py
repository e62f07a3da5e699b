"""The environment a spawning parent gives its child: names both sides read, owned by neither.

The parent (targets.py) writes them, the child (runner.py) reads them; keeping them here lets
the parent side stay free of child-side imports.
"""
from __future__ import annotations

#: The tcp port the child connects its ROUTER to (what a JavaScript worker reads too).
PORT_ENV = "COMLINK_ZMQ_PORT"
#: The whole endpoint (ipc://, unix://), used instead of the port for non-tcp transports.
ENDPOINT_ENV = "MULTIFROST_ENDPOINT"
#: Set to "1": the process was started as a worker by a parent.
WORKER_MODE_ENV = "COMLINK_WORKER_MODE"
