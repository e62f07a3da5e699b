"""The parent side of a worker: ``ParentWorker`` and the pieces it is made of.

``worker.py`` (the facade), ``calls.py`` (the call path), ``lifecycle.py`` (the pure
lifecycle core, with ``circuit.py`` and ``heartbeats.py``), ``driver.py`` (what both drivers
share), ``sync_driver.py``, ``async_driver.py`` and ``output.py`` (child output routing).
"""
from .driver import CLOSE_GRACE
from .worker import ParentWorker

__all__ = ["CLOSE_GRACE", "ParentWorker"]
