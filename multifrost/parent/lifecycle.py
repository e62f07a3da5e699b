"""A worker's lifecycle as a pure state machine (sans-I/O, in the manner of h11): the drivers
feed it events with the current time and carry out the actions it returns. Every decision
lives here once (states, circuit breaker, restart backoff, heartbeat counters, start-up
probes); no clock is read and no I/O is done. Each opened connection gets a *generation*:
events about one torn down since are stale and ignored (a replaced child's late exit or echo).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MultifrostError, TransportClosed, TransportError, WorkerCrashedError
from .circuit import CLOSED as CIRCUIT_CLOSED, OPEN as CIRCUIT_OPEN, CircuitBreaker
from .events import (  # noqa: F401  (re-exported: lc.Start, lc.Open, ...)
    Start, Started, StartFailed, ProbeDue, ChildExited, HeartbeatEchoed, ConnectionDropped, MoveSuspected,
    ServiceMoved, RestartRequested, TrialCall, CloseRequested, Exiting, TimePassed, Open, Probe,
    StartTimedOut, TearDown, FailInFlight, HoldCalls, ReleaseCalls, SendHeartbeat, ForgetHeartbeat, CheckMoved,
    CircuitChanged, Restarted, Log, WaitUntil, Event, Action, Config)
from .heartbeats import Heartbeats

IDLE, STARTING, UP, BACKOFF, DOWN, CLOSED = "idle", "starting", "up", "backoff", "down", "closed"
STATES = (IDLE, STARTING, UP, BACKOFF, DOWN, CLOSED)

BACKOFF_START, BACKOFF_CAP = 0.1, 5.0
FAST_PROBE, FAST_PROBE_FOR, SLOW_PROBE = 0.005, 0.1, 0.25  # start-up probes: every 5 ms for 100 ms, then 250 ms
LAST_WORDS = 0.05  # seconds a dead child's last replies get to arrive before its calls fail
DROP_WAIT = 1.0  # seconds a spawned child whose connection dropped gets to be seen exiting (a crash)


def backoff_delays(attempts: int) -> list[float]:
    """Seconds to wait before each restart attempt: doubling from 0.1 s, capped at 5 s."""
    return [backoff_delay(i) for i in range(attempts)]


def backoff_delay(attempt: int) -> float:
    return min(BACKOFF_START * 2.0 ** min(attempt, 32), BACKOFF_CAP)


class LifecycleError(RuntimeError):
    """An event that cannot happen in the current state: a driver bug."""



@dataclass
class _Start:
    """The start-up of one generation: when it began, its deadline, the next probe's time."""
    began: float
    deadline: float
    kind: str  # "first", "manual" or "auto"
    next_probe: float = field(default=0.0)


class Lifecycle:
    """The state machine. ``handle(event, now)`` returns the actions to carry out, in order."""

    def __init__(self, config: Config, now: float) -> None:
        self.config, self.options = config, (options := config.options)
        # Failures in a row that open the circuit: with auto_restart, a crash and then
        # max_restart_attempts failed restarts (or restarted children that die before answering).
        threshold = max(1, options.max_restart_attempts) + (1 if options.auto_restart else 0)
        self.breaker = CircuitBreaker(threshold, options.circuit_reset_timeout)
        self.beats = Heartbeats(options.heartbeat_interval, options.heartbeat_timeout,
                                options.heartbeat_max_misses, now)
        self.state = IDLE
        self.generation = 0  # of the last Open
        self.live: int | None = None  # the generation whose connection is open, if any
        self.down: MultifrostError | None = None  # why the worker is not running
        self.healthy = False
        self.held = True  # calls wait (before start, while starting, and while held)
        self.exiting = False
        self.checking = False  # a CheckMoved is out
        self._start: _Start | None = None
        self._restart_at: float | None = None
        self._attempts = 0  # restart attempts made in the current run
        self._budget = 0  # restart attempts allowed in the current run
        self._drop_due: float | None = None
        self._drop_spawned = False
        self._beat_count = 0
        self._circuit = CIRCUIT_CLOSED
        self._wake: float | None = None

    # -- queries --------------------------------------------------------------------------

    def circuit_state(self, now: float) -> str:
        return self.breaker.state(now)

    def is_healthy(self, now: float) -> bool:
        return self.state == UP and self.healthy and self.breaker.state(now) == CIRCUIT_CLOSED

    def verdict(self) -> MultifrostError | None | bool:
        """For a call: None (go), True (wait for the worker), or the error to raise now."""
        if self.state == UP and not self.held:
            return None
        return self._why_not() if self.state in (CLOSED, DOWN, IDLE) else True

    def ping_verdict(self) -> MultifrostError | None:
        """For a ping: None when a connection is open, else the error to raise."""
        return None if self.live is not None and self.state != CLOSED else self._why_not()

    def _why_not(self) -> MultifrostError:
        if self.state == CLOSED:
            return TransportClosed(f"{self.config.name} was closed")
        return self.down or TransportClosed(f"{self.config.name} is not running")

    @property
    def restarting(self) -> bool:
        return self.state == BACKOFF or (self.state == STARTING and self._start is not None
                                         and self._start.kind != "first")

    def wake_at(self) -> float | None:
        """When the core next wants TimePassed, or None."""
        times: list[float] = []
        if self.state == BACKOFF and self._restart_at is not None:
            times.append(self._restart_at)
        if self.state == UP:
            if self.options.heartbeat_interval > 0:
                times.append(self.beats.next_event())
            if self._drop_due is not None:
                times.append(self._drop_due)
        half_open = self.breaker.half_open_at()  # to report the circuit turning half-open
        if half_open is not None and self._circuit == CIRCUIT_OPEN:
            times.append(half_open)
        return min(times) if times else None

    # -- the call path (the breaker) -------------------------------------------------------

    def permit(self, now: float) -> str | None:
        """A call's permit: ``"closed"``, ``"trial"`` (the half-open trial) or None (fail fast)."""
        return self.breaker.allow(now)

    def call_answered(self, permit: str, now: float) -> list[Action]:
        if permit == "trial" or self.breaker.failures:
            self.breaker.record_success()
        return self._circuit_actions(now)

    def call_failed(self, permit: str, crash: bool, now: float) -> list[Action]:
        """A call failed; a trial that saw a crash or a failed start reopens the circuit."""
        if permit == "trial":
            if crash:
                self.breaker.record_failure(now)
            else:
                self.breaker.end_trial()
        return self._circuit_actions(now)

    # -- events ---------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply ``event`` at time ``now``; returns the actions to carry out, in order."""
        generation = getattr(event, "generation", None)
        if generation is not None and generation != self.live:
            return []  # about a connection torn down since (or never live): changes nothing
        handler, targets = _TABLE.get((self.state, type(event)), (None, frozenset()))
        if handler is None:
            raise LifecycleError(f"{type(event).__name__} cannot happen in state {self.state}")
        before, was = self.wake_at(), self.state
        actions: list[Action] = handler(self, event, now)
        if self.state not in targets:
            raise LifecycleError(f"{type(event).__name__} took {was} to {self.state}, not to {sorted(targets)}")
        actions += self._circuit_actions(now)
        after = self.wake_at()
        if after != before or isinstance(event, TimePassed):
            actions.append(WaitUntil(after))
        return actions

    # the transitions (see _TABLE)

    def _ignore(self, event: Event, now: float) -> list[Action]:
        return []
    def _on_start(self, event: Start, now: float) -> list[Action]:
        return self._open(now, "first")

    def _open(self, now: float, kind: str) -> list[Action]:
        self.generation += 1
        self.state, self.live, self.held, self.checking, self._drop_due = STARTING, self.generation, True, False, None
        self._start = _Start(now, now + self.options.start_timeout, kind, now)
        return [HoldCalls(), Open(self.generation)]

    def _on_probe_due(self, event: ProbeDue, now: float) -> list[Action]:
        start = self._start
        assert start is not None
        if now >= start.deadline:
            return [StartTimedOut(event.generation)]
        period = FAST_PROBE if now - start.began < FAST_PROBE_FOR else SLOW_PROBE
        start.next_probe = min(max(start.next_probe, now) + period, start.deadline)
        return [Probe(event.generation, max(0.0, start.next_probe - now))]

    def _on_started(self, event: Started, now: float) -> list[Action]:
        # The breaker's run of failures goes on until a call or a heartbeat is answered, so that
        # a child that dies soon after every start still opens the circuit instead of restarting forever.
        start = self._start
        assert start is not None
        self.state, self._start = UP, None
        self.down, self.healthy, self.held = None, True, False
        self.beats.restart(now)
        actions: list[Action] = [ReleaseCalls()]
        if start.kind == "auto":
            actions += [Restarted(), Log("info", f"{self.config.name} restarted")]
        return actions

    def _on_start_failed(self, event: StartFailed, now: float) -> list[Action]:
        start = self._start
        assert start is not None
        self._start = None
        actions: list[Action] = [TearDown(event.generation, event.error)]
        self.live, self.down, self.healthy = None, event.error, False
        if start.kind != "auto":  # the caller of start()/restart() gets the error
            self.state = DOWN
            return actions + [ReleaseCalls()]
        actions.append(Log("warning", f"restart of {self.config.name} failed: {event.error}"))
        self.breaker.record_failure(now)
        self._attempts += 1
        if self.breaker.state(now) != CIRCUIT_CLOSED or self._attempts >= self._budget:
            return actions + self._give_up(now)
        return actions + self._backoff(now)

    def _backoff(self, now: float) -> list[Action]:
        self.state, self._restart_at = BACKOFF, now + backoff_delay(self._attempts)
        return []

    def _give_up(self, now: float) -> list[Action]:
        self.state, self._restart_at = DOWN, None
        self.breaker.trip(now)
        return [Log("warning", f"{self.config.name}: restarts failed (up to {self._budget} in a row); "
                               f"the circuit breaker opens"), ReleaseCalls()]

    def _run_restarts(self, budget: int, now: float) -> list[Action]:
        self._attempts, self._budget = 0, budget
        return self._backoff(now)

    def _lose(self, error: MultifrostError) -> list[Action]:
        """The live connection is gone (or going) for ``error``: tear it down, calls wait."""
        actions: list[Action] = [HoldCalls()]
        if self.live is not None:
            actions.append(TearDown(self.live, error))
        self.live, self.down, self.healthy, self.held = None, error, False, True
        self._drop_due, self.checking = None, False
        return actions

    def _on_exited(self, event: ChildExited, now: float) -> list[Action]:
        extra = {"pid": event.pid, "exit_code": getattr(event.error, "exit_code", None)}
        actions: list[Action] = [Log("warning", str(event.error), extra)] + self._lose(event.error)
        self.breaker.record_failure(now)
        restart = self.options.auto_restart and not self.exiting and self.breaker.state(now) == CIRCUIT_CLOSED
        if restart:
            return actions + self._run_restarts(self.options.max_restart_attempts, now)
        self.state = DOWN
        if self.options.auto_restart:
            actions.append(Log("warning", f"{self.config.name}: not restarting it, the circuit breaker is open"))
        return actions + [ReleaseCalls()]

    def _on_echo(self, event: HeartbeatEchoed, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.beats.echoed(event.msg_id):
            actions.append(Log("info", f"{self.config.name} answers heartbeats again"))
        self.healthy = True
        self.breaker.record_success()
        if self.held:  # an answer: calls held after a drop or silence go on
            self.held = False
            actions.append(ReleaseCalls())
        return actions

    def _on_dropped(self, event: ConnectionDropped, now: float) -> list[Action]:
        self._drop_due = now + (DROP_WAIT if event.spawned else LAST_WORDS)
        self._drop_spawned = event.spawned
        return []

    def _dropped_due(self) -> list[Action]:
        """A connection dropped a while ago and the child was not seen exiting: fail its calls in
        flight now, not at their timeouts. A service's client cannot tell a cut connection from
        the service going away: its new calls wait for a probe's echo (or for the move)."""
        assert self.live is not None
        self._drop_due = None
        what = (f"the connection to {self.config.name} was dropped (it went away, or a message over "
                f"its limits cut it); calls in flight failed")
        if self._drop_spawned:
            return [FailInFlight(self.live, TransportError(what))]
        self.held, self.healthy = True, False  # until a probe's echo says it is there
        return [HoldCalls(), FailInFlight(self.live, WorkerCrashedError(what)),
                Probe(self.live, self.options.heartbeat_timeout)]

    def _on_move_suspected(self, event: MoveSuspected, now: float) -> list[Action]:
        if self.checking or not self.config.relocatable:
            return []
        self.checking = True
        return [CheckMoved(event.generation)]

    def _on_moved(self, event: ServiceMoved, now: float) -> list[Action]:
        self.checking = False
        if not event.moved:  # still registered there: held calls go on to it
            released, self.held = self.held, False
            return [ReleaseCalls()] if released else []
        error = WorkerCrashedError(f"{self.config.name} went away; calls in flight failed, reconnecting")
        actions = [Log("warning", str(error))] + self._lose(error)
        return actions + self._run_restarts(self.options.max_restart_attempts, now)

    def _on_restart(self, event: RestartRequested, now: float) -> list[Action]:
        self.breaker.reset()
        actions = self._lose(WorkerCrashedError(f"{self.config.name} is being restarted"))
        return actions + self._open(now, "manual")

    def _on_restart_closed(self, event: RestartRequested, now: float) -> list[Action]:
        raise TransportClosed(f"{self.config.name} was closed")

    def _on_trial(self, event: TrialCall, now: float) -> list[Action]:
        self.held = True
        return [HoldCalls()] + self._run_restarts(1, now)

    def _on_close(self, event: CloseRequested, now: float) -> list[Action]:
        reason = TransportClosed(f"{self.config.name} was closed")
        actions: list[Action] = [] if self.live is None else [TearDown(self.live, reason, shutdown=True)]
        self.state, self.live, self.healthy, self.held = CLOSED, None, False, True
        self._start = self._restart_at = self._drop_due = None
        return actions + [ReleaseCalls()]

    def _on_exiting(self, event: Exiting, now: float) -> list[Action]:
        self.exiting = True
        if self.state == BACKOFF:
            self.state, self._restart_at = DOWN, None
            return [ReleaseCalls()]
        return []

    def _on_time_up(self, event: TimePassed, now: float) -> list[Action]:
        """Heartbeats due or overdue, and a dropped connection whose wait is over."""
        assert self.live is not None
        actions: list[Action] = []
        generation = self.live
        if self._drop_due is not None and now >= self._drop_due:
            actions += self._dropped_due()
        if self.options.heartbeat_interval <= 0:
            return actions
        for msg_id in self.beats.overdue(now):
            actions.append(ForgetHeartbeat(generation, msg_id))
            if self.beats.expired(msg_id):
                actions.append(Log("warning", f"{self.config.name} left {self.beats.unanswered} heartbeats "
                                              f"in a row unanswered: unhealthy"))
                self.healthy = False
                self.breaker.record_failure(now)
                if self.config.relocatable and not self.held:
                    # New calls wait for the registry's verdict instead of going to a service that may be gone.
                    self.held = True
                    actions.append(HoldCalls())
            if self.config.relocatable and not self.checking:
                self.checking = True
                actions.append(CheckMoved(generation))
        if self.beats.due(now):
            self._beat_count += 1
            msg_id = f"{self.config.id_prefix}-{self._beat_count}"
            self.beats.sent(msg_id, now)
            actions.append(SendHeartbeat(generation, msg_id))
        return actions

    def _on_time_backoff(self, event: TimePassed, now: float) -> list[Action]:
        if self._restart_at is None or now < self._restart_at:
            return []
        if self.exiting:
            self.state, self._restart_at = DOWN, None
            return [ReleaseCalls()]
        self._restart_at = None
        return self._open(now, "auto")

    def _circuit_actions(self, now: float) -> list[Action]:
        state = self.breaker.state(now)
        changed, self._circuit = state != self._circuit, state
        return [CircuitChanged(state)] if changed else []


_H = Callable[[Lifecycle, Any, float], "list[Action]"]
_L = Lifecycle
#: state x event -> (handler, the states it may leave the machine in); a pair not listed cannot
#: happen (LifecycleError). Events about a generation that is not live never get here (``handle``).
_TABLE: dict[tuple[str, type], tuple[_H, frozenset[str]]] = {
    (IDLE, Start): (_L._on_start, frozenset({STARTING})),
    (STARTING, ProbeDue): (_L._on_probe_due, frozenset({STARTING})),
    (STARTING, Started): (_L._on_started, frozenset({UP})),
    (STARTING, StartFailed): (_L._on_start_failed, frozenset({DOWN, BACKOFF})),
    (UP, ChildExited): (_L._on_exited, frozenset({DOWN, BACKOFF})),
    (UP, HeartbeatEchoed): (_L._on_echo, frozenset({UP})),
    (UP, ConnectionDropped): (_L._on_dropped, frozenset({UP})),
    (UP, MoveSuspected): (_L._on_move_suspected, frozenset({UP})),
    (UP, ServiceMoved): (_L._on_moved, frozenset({UP, BACKOFF})),
    (UP, TimePassed): (_L._on_time_up, frozenset({UP})),
    (BACKOFF, TimePassed): (_L._on_time_backoff, frozenset({BACKOFF, STARTING, DOWN})),
    (DOWN, TrialCall): (_L._on_trial, frozenset({BACKOFF})),
    (CLOSED, RestartRequested): (_L._on_restart_closed, frozenset()),
}
for _state in STATES:
    if _state not in (IDLE, CLOSED):
        _TABLE[(_state, RestartRequested)] = (_L._on_restart, frozenset({STARTING}))
    _TABLE[(_state, CloseRequested)] = (_L._ignore if _state == CLOSED else _L._on_close, frozenset({CLOSED}))
    _TABLE[(_state, Exiting)] = (_L._on_exiting, frozenset({_state, DOWN if _state == BACKOFF else _state}))
#: what changes nothing in a state: while starting, the opener sees an exit or a drop itself
#: and the start probe, not a ping, decides; a trial call finds the worker on its way back.
for _state, _events in {IDLE: (TimePassed,),
                        STARTING: (ChildExited, HeartbeatEchoed, ConnectionDropped, MoveSuspected, TrialCall,
                                   TimePassed),
                        UP: (TrialCall,), BACKOFF: (TrialCall,), DOWN: (TimePassed,),
                        CLOSED: (TrialCall, TimePassed)}.items():
    for _event in _events:
        _TABLE[(_state, _event)] = (_L._ignore, frozenset({_state}))
