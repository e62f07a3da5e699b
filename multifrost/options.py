"""How a ParentWorker behaves: one frozen, keyword-only object instead of a dozen loose settings.

``ParentWorker.spawn``/``connect``/``inprocess`` build it from their keyword arguments, and
``ParentWorker(target, options)`` keeps it; a setting cannot change once the worker exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ._limits import Limits
from .timeouts import check_timeout


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """The settings of one ParentWorker (README, "Reference", has each one's meaning)."""

    default_timeout: float | None = None
    auto_restart: bool = False
    max_restart_attempts: int = 5
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 3.0
    heartbeat_max_misses: int = 3
    start_timeout: float = 10.0
    circuit_reset_timeout: float = 10.0
    on_output: Callable[[str, str], None] | None = None
    client_name: str | None = None
    limits: Limits | None = None
    metrics: bool = True

    def __post_init__(self) -> None:
        check_timeout(self.default_timeout, "default_timeout")
