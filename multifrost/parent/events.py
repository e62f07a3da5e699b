"""The lifecycle core's vocabulary: its configuration, the events drivers feed it and the actions it returns.

Plain frozen records; ``lifecycle.py`` decides, the drivers carry out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..errors import MultifrostError
from ..options import WorkerOptions


# -- events --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    """start()/astart() was called."""


@dataclass(frozen=True)
class Started:
    """The connection of ``generation`` answered a start-up probe."""
    generation: int


@dataclass(frozen=True)
class StartFailed:
    """Opening or probing ``generation`` failed with ``error``."""
    generation: int
    error: MultifrostError


@dataclass(frozen=True)
class ProbeDue:
    """The opener of ``generation`` asks what to do next while the worker starts."""
    generation: int


@dataclass(frozen=True)
class ChildExited:
    """The child of ``generation`` (process ``pid``) exited on its own (``error`` says how)."""
    generation: int
    error: MultifrostError
    pid: int | None = None


@dataclass(frozen=True)
class HeartbeatEchoed:
    """An echo came back on ``generation`` (of heartbeat ``msg_id``, or of a ping/probe: None)."""
    generation: int
    msg_id: str | None = None


@dataclass(frozen=True)
class ConnectionDropped:
    """The end of ``generation`` saw its connection dropped; ``spawned``: to a child process of ours,
    whose exit, not the drop, says whether it died."""
    generation: int
    spawned: bool = False


@dataclass(frozen=True)
class MoveSuspected:
    """The registry's watch says the service instance in use left."""
    generation: int


@dataclass(frozen=True)
class ServiceMoved:
    """The registry's verdict for ``generation``: the service is gone or elsewhere (``moved``) or not."""
    generation: int
    moved: bool


@dataclass(frozen=True)
class RestartRequested:
    """restart()/arestart() was called."""


@dataclass(frozen=True)
class TrialCall:
    """A half-open trial call found the worker down: it may start it once."""


@dataclass(frozen=True)
class CloseRequested:
    """close()/aclose() was called."""


@dataclass(frozen=True)
class Exiting:
    """This process is exiting (signal, atexit): never restart the child again."""


@dataclass(frozen=True)
class TimePassed:
    """Nothing happened but time: heartbeats, backoff, a dropped connection's wait."""


Event = Union[Start, Started, StartFailed, ProbeDue, ChildExited, HeartbeatEchoed, ConnectionDropped,
              MoveSuspected, ServiceMoved, RestartRequested, TrialCall, CloseRequested, Exiting, TimePassed]


# -- actions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Open:
    """Start the child (or find the service) as ``generation``, then send ProbeDue until it answers."""
    generation: int


@dataclass(frozen=True)
class Probe:
    """Send a heartbeat on ``generation`` and wait up to ``wait`` s for its echo (then report it)."""
    generation: int
    wait: float


@dataclass(frozen=True)
class StartTimedOut:
    """``generation`` did not answer within start_timeout: report StartFailed with the details."""
    generation: int


@dataclass(frozen=True)
class TearDown:
    """Fail the calls in flight on ``generation`` with ``reason`` and release its channel and child."""
    generation: int
    reason: MultifrostError
    shutdown: bool = False


@dataclass(frozen=True)
class FailInFlight:
    """Fail the calls in flight on ``generation`` now (its connection dropped) and keep the channel."""
    generation: int
    error: MultifrostError


@dataclass(frozen=True)
class HoldCalls:
    """New calls wait (within their timeouts) instead of being sent."""


@dataclass(frozen=True)
class ReleaseCalls:
    """Waiting and new calls may go (or, when the worker is down or closed, fail: see ``verdict``)."""


@dataclass(frozen=True)
class SendHeartbeat:
    generation: int
    msg_id: str


@dataclass(frozen=True)
class ForgetHeartbeat:
    """Heartbeat ``msg_id`` is overdue: stop waiting for its echo."""
    generation: int
    msg_id: str


@dataclass(frozen=True)
class CheckMoved:
    """Ask the registry whether the service left (report ServiceMoved)."""
    generation: int


@dataclass(frozen=True)
class CircuitChanged:
    state: str


@dataclass(frozen=True)
class Restarted:
    """A restart brought the worker back (count it)."""


@dataclass(frozen=True)
class Log:
    level: str  # "info" or "warning"
    message: str
    extra: dict | None = None


@dataclass(frozen=True)
class WaitUntil:
    """Feed TimePassed at ``when`` (the earliest moment the core has something to do), or never (None)."""
    when: float | None


Action = Union[Open, Probe, StartTimedOut, TearDown, FailInFlight, HoldCalls, ReleaseCalls, SendHeartbeat,
               ForgetHeartbeat, CheckMoved, CircuitChanged, Restarted, Log, WaitUntil]


@dataclass(frozen=True)
class Config:
    """The worker as the lifecycle sees it: a name for messages, its options, what its target says."""
    name: str
    options: WorkerOptions = WorkerOptions()
    relocatable: bool = False  # a registered service that may move (connect mode)
    id_prefix: str = "hb"  # heartbeat ids are this, a dash and a count
