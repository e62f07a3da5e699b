"""The lifecycle core on a fake clock: table tests of its transitions, then a hypothesis state
machine that throws any sequence of events at it and checks what must always hold."""
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from multifrost.options import WorkerOptions
from multifrost.errors import TransportClosed, TransportError, WorkerCrashedError, WorkerStartError
from multifrost.parent import lifecycle as lc
from multifrost.parent.lifecycle import (BACKOFF, CLOSED, DOWN, IDLE, STARTING, UP, Config, Lifecycle,
                                         LifecycleError)

def cfg(name, relocatable=False, **options):
    return Config(name, WorkerOptions(**options), relocatable)


CRASH = WorkerCrashedError("worker exited with code 1")
NO_START = WorkerStartError("worker exited with code 4 before it connected")


def kinds(actions):
    return [type(a).__name__ for a in actions if not isinstance(a, lc.WaitUntil)]


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def up(config=None, now=0.0):
    core = Lifecycle(config or cfg("w"), now)
    core.handle(lc.Start(), now)
    core.handle(lc.Started(core.live), now)
    return core


# -- start-up --------------------------------------------------------------------------------

def test_start_opens_then_probes_every_5ms_for_100ms_then_every_250ms():
    core = Lifecycle(cfg("w", start_timeout=10), 0.0)
    assert core.state == IDLE and core.verdict() is not None
    actions = core.handle(lc.Start(), 0.0)
    assert kinds(actions) == ["HoldCalls", "Open"] and core.state == STARTING and core.verdict() is True
    generation = of(actions, lc.Open)[0].generation
    waits, now = [], 0.0
    while now < 0.6:
        probe = of(core.handle(lc.ProbeDue(generation), now), lc.Probe)[0]
        waits.append(round(probe.wait, 6))
        now += probe.wait
    assert waits[:20] == [0.005] * 20 and set(waits[21:]) == {0.25}
    actions = core.handle(lc.Started(generation), now)
    assert kinds(actions) == ["ReleaseCalls"] and core.state == UP and core.verdict() is None
    assert core.is_healthy(now)


def test_a_start_that_never_answers_times_out_and_a_failed_first_start_leaves_it_down():
    core = Lifecycle(cfg("w", start_timeout=1.0), 0.0)
    generation = of(core.handle(lc.Start(), 0.0), lc.Open)[0].generation
    assert of(core.handle(lc.ProbeDue(generation), 0.99), lc.Probe)[0].wait == pytest.approx(0.01)
    assert kinds(core.handle(lc.ProbeDue(generation), 1.0)) == ["StartTimedOut"]
    actions = core.handle(lc.StartFailed(generation, NO_START), 1.0)
    assert kinds(actions) == ["TearDown", "ReleaseCalls"] and core.state == DOWN
    assert core.verdict() is NO_START and core.circuit_state(1.0) == "closed"  # start() raises; no breaker failure


# -- crashes, restarts, backoff, the circuit ---------------------------------------------------

def test_a_crash_without_auto_restart_fails_calls_and_stays_down():
    core = up()
    gen = core.live
    actions = core.handle(lc.ChildExited(gen, CRASH), 1.0)
    assert kinds(actions) == ["Log", "HoldCalls", "TearDown", "ReleaseCalls"]
    assert of(actions, lc.TearDown)[0] == lc.TearDown(gen, CRASH)
    assert core.state == DOWN and core.verdict() is CRASH and core.ping_verdict() is CRASH
    assert not core.is_healthy(1.0) and core.circuit_state(1.0) == "closed"  # threshold 5
    assert core.handle(lc.TimePassed(), 100.0) == [lc.WaitUntil(None)]  # nothing restarts it


def test_auto_restart_backs_off_doubling_and_gives_up_with_the_circuit_open():
    core = up(cfg("w", auto_restart=True, max_restart_attempts=3))
    core.handle(lc.ChildExited(core.live, CRASH), 0.0)
    assert core.state == BACKOFF and core.verdict() is True and core.restarting
    now, delays = 0.0, []
    for _ in range(3):
        wake = core.wake_at()
        delays.append(round(wake - now, 6))
        assert core.handle(lc.TimePassed(), wake - 0.001) == [lc.WaitUntil(wake)]  # not yet
        now = wake
        opened = of(core.handle(lc.TimePassed(), now), lc.Open)
        assert len(opened) == 1 and core.state == STARTING
        actions = core.handle(lc.StartFailed(opened[0].generation, NO_START), now)
        assert of(actions, lc.TearDown)
    assert delays == [0.1, 0.2, 0.4]
    assert core.state == DOWN and core.circuit_state(now) == "open" and core.verdict() is NO_START
    assert lc.CircuitChanged("open") in actions


def test_a_restart_that_answers_counts_and_the_circuit_stays_closed():
    core = up(cfg("w", auto_restart=True))
    core.handle(lc.ChildExited(core.live, CRASH), 0.0)
    opened = of(core.handle(lc.TimePassed(), 0.1), lc.Open)[0]
    actions = core.handle(lc.Started(opened.generation), 0.2)
    assert kinds(actions) == ["ReleaseCalls", "Restarted", "Log"] and core.state == UP
    assert core.breaker.failures == 1  # until something is answered: a child dying after each start opens it
    core.handle(lc.HeartbeatEchoed(opened.generation), 0.3)
    assert core.breaker.failures == 0


def test_backoff_delays_double_from_a_tenth_of_a_second_up_to_five():
    assert lc.backoff_delays(8) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert lc.backoff_delays(5000)[-1] == 5.0


def test_the_half_open_trial_restarts_a_down_worker_once_and_its_failure_reopens():
    core = up(cfg("w", max_restart_attempts=1, circuit_reset_timeout=10))
    core.handle(lc.ChildExited(core.live, CRASH), 0.0)
    assert core.circuit_state(0.0) == "open" and core.permit(0.0) is None
    assert core.wake_at() == 10.0
    assert lc.CircuitChanged("half_open") in core.handle(lc.TimePassed(), 10.0)
    assert core.permit(10.0) == "trial" and core.permit(10.0) is None
    core.handle(lc.TrialCall(), 10.0)
    assert core.state == BACKOFF
    opened = of(core.handle(lc.TimePassed(), 10.1), lc.Open)[0]
    core.handle(lc.StartFailed(opened.generation, NO_START), 10.1)
    assert core.call_failed("trial", True, 10.1) == []  # already open: the failed start tripped it
    assert core.state == DOWN and core.circuit_state(10.1) == "open"


def test_a_manual_restart_closes_the_circuit_and_tears_the_old_child_down():
    core = up(cfg("w", max_restart_attempts=1))
    old = core.live
    core.handle(lc.ChildExited(old, CRASH), 0.0)
    actions = core.handle(lc.RestartRequested(), 1.0)
    assert lc.CircuitChanged("closed") in actions and core.state == STARTING
    new = of(actions, lc.Open)[0].generation
    assert new != old and not of(actions, lc.TearDown)  # the crashed one is gone already
    core.handle(lc.Started(new), 1.1)
    actions = core.handle(lc.RestartRequested(), 2.0)
    assert of(actions, lc.TearDown)[0].generation == new
    assert isinstance(of(actions, lc.TearDown)[0].reason, WorkerCrashedError)


def test_a_manual_restart_that_fails_leaves_the_worker_down():
    core = up()
    gen = of(core.handle(lc.RestartRequested(), 1.0), lc.Open)[0].generation
    actions = core.handle(lc.StartFailed(gen, NO_START), 1.5)
    assert kinds(actions) == ["TearDown", "ReleaseCalls"] and core.state == DOWN and core.verdict() is NO_START


# -- heartbeats ----------------------------------------------------------------------------------

def test_heartbeats_go_out_on_schedule_and_misses_make_the_worker_unhealthy_and_count_once():
    core = up(cfg("w", heartbeat_interval=1.0, heartbeat_timeout=3.0, heartbeat_max_misses=3))
    gen = core.live
    sent = []
    for second in range(1, 8):
        actions = core.handle(lc.TimePassed(), float(second))
        sent += [a.msg_id for a in of(actions, lc.SendHeartbeat)]
        if second < 4:
            assert not of(actions, lc.ForgetHeartbeat)
    assert len(sent) == 7 and len(set(sent)) == 7
    assert not core.is_healthy(7.0) and core.breaker.failures == 1  # one silence, one failure
    actions = core.handle(lc.HeartbeatEchoed(gen, sent[-1]), 7.1)
    assert kinds(actions) == ["Log"] and core.is_healthy(7.1) and core.breaker.failures == 0


def test_no_heartbeats_when_the_interval_is_zero():
    core = up(cfg("w", heartbeat_interval=0))
    assert core.handle(lc.TimePassed(), 1000.0) == [lc.WaitUntil(None)]


def test_a_silent_service_holds_calls_until_the_registry_answers():
    core = up(cfg("svc", heartbeat_interval=1.0, heartbeat_timeout=0.5, heartbeat_max_misses=1,
                     relocatable=True))
    gen = core.live
    core.handle(lc.TimePassed(), 1.0)
    actions = core.handle(lc.TimePassed(), 1.5)
    assert kinds(actions) == ["ForgetHeartbeat", "Log", "HoldCalls", "CheckMoved"] and core.verdict() is True
    assert not of(core.handle(lc.MoveSuspected(gen), 1.6), lc.CheckMoved)  # one check at a time
    assert kinds(core.handle(lc.ServiceMoved(gen, False), 1.7)) == ["ReleaseCalls"] and core.verdict() is None
    core.handle(lc.MoveSuspected(gen), 1.8)
    actions = core.handle(lc.ServiceMoved(gen, True), 1.9)
    assert kinds(actions)[:3] == ["Log", "HoldCalls", "TearDown"] and core.state == BACKOFF
    assert isinstance(core.verdict(), bool)


# -- dropped connections -------------------------------------------------------------------------

def test_a_spawned_childs_dropped_connection_fails_its_calls_after_a_second_unless_it_exited():
    core = up(cfg("w", heartbeat_interval=0))
    gen = core.live
    assert core.handle(lc.ConnectionDropped(gen, spawned=True), 5.0) == [lc.WaitUntil(6.0)]
    actions = core.handle(lc.TimePassed(), 6.0)
    assert kinds(actions) == ["FailInFlight"] and isinstance(actions[0].error, TransportError)
    core2 = up(cfg("w", heartbeat_interval=0))
    core2.handle(lc.ConnectionDropped(core2.live, spawned=True), 5.0)
    core2.handle(lc.ChildExited(core2.live, CRASH), 5.5)
    assert kinds(core2.handle(lc.TimePassed(), 6.0)) == []  # the exit failed them as a crash


def test_a_services_dropped_connection_holds_calls_and_probes():
    core = up(cfg("svc", relocatable=True, heartbeat_interval=0))
    gen = core.live
    core.handle(lc.ConnectionDropped(gen), 0.0)
    actions = core.handle(lc.TimePassed(), 0.05)
    assert kinds(actions) == ["HoldCalls", "FailInFlight", "Probe"]
    assert isinstance(actions[1].error, WorkerCrashedError) and core.verdict() is True
    assert not core.is_healthy(0.05)  # a pool sends its calls elsewhere meanwhile
    assert kinds(core.handle(lc.HeartbeatEchoed(gen), 0.06)) == ["ReleaseCalls"] and core.verdict() is None
    assert core.is_healthy(0.06)


# -- close, stale and impossible events ----------------------------------------------------------

def test_close_tears_down_with_shutdown_is_idempotent_and_nothing_restarts_after_it():
    core = up(cfg("w", auto_restart=True))
    gen = core.live
    actions = core.handle(lc.CloseRequested(), 1.0)
    assert kinds(actions) == ["TearDown", "ReleaseCalls"] and actions[0].shutdown
    assert isinstance(actions[0].reason, TransportClosed) and isinstance(core.verdict(), TransportClosed)
    assert core.handle(lc.CloseRequested(), 1.1) == []
    assert core.handle(lc.ChildExited(gen, CRASH), 1.2) == []  # stale: the closed child's exit
    assert core.handle(lc.TimePassed(), 99.0) == [lc.WaitUntil(None)]
    with pytest.raises(TransportClosed):
        core.handle(lc.RestartRequested(), 2.0)


def test_close_during_a_backoff_cancels_the_restart():
    core = up(cfg("w", auto_restart=True))
    core.handle(lc.ChildExited(core.live, CRASH), 0.0)
    assert kinds(core.handle(lc.CloseRequested(), 0.05)) == ["ReleaseCalls"]
    assert not of(core.handle(lc.TimePassed(), 1.0), lc.Open)


def test_exiting_stops_a_pending_restart_and_prevents_the_next():
    core = up(cfg("w", auto_restart=True))
    core.handle(lc.Exiting(), 0.0)
    core.handle(lc.ChildExited(core.live, CRASH), 0.0)
    assert core.state == DOWN
    core2 = up(cfg("w", auto_restart=True))
    core2.handle(lc.ChildExited(core2.live, CRASH), 0.0)
    core2.handle(lc.Exiting(), 0.01)
    assert core2.state == DOWN and not of(core2.handle(lc.TimePassed(), 1.0), lc.Open)


def test_impossible_events_raise():
    core = up()
    with pytest.raises(LifecycleError):
        core.handle(lc.Start(), 1.0)
    with pytest.raises(LifecycleError):
        core.handle(lc.Started(core.live), 1.0)
    with pytest.raises(LifecycleError):
        Lifecycle(cfg("w"), 0.0).handle(lc.RestartRequested(), 0.0)


def test_every_state_and_event_pair_is_decided():
    """The table is explicit: each pair is handled or raises LifecycleError, never anything else."""
    events = [lc.Start(), lc.TrialCall(), lc.CloseRequested(), lc.Exiting(), lc.TimePassed(),
              lc.RestartRequested()]
    for state in lc.STATES:
        for event in events:
            core = up(cfg("w", auto_restart=True))
            core.state = state
            try:
                core.handle(event, 1.0)
            except (LifecycleError, TransportClosed):
                assert (state, type(event)) not in lc._TABLE or state == CLOSED
            else:
                assert core.state in lc._TABLE[(state, type(event))][1]


def test_the_table_names_where_each_transition_may_lead():
    """Every listed pair says which states it may end in, and handle() holds it to that."""
    assert all(isinstance(targets, frozenset) and targets <= set(lc.STATES) for _, targets in lc._TABLE.values())
    core = up()
    lc._TABLE[(UP, lc.TrialCall)], saved = (lc.Lifecycle._on_close, frozenset({UP})), lc._TABLE[(UP, lc.TrialCall)]
    try:
        with pytest.raises(LifecycleError, match="took up to closed"):
            core.handle(lc.TrialCall(), 1.0)
    finally:
        lc._TABLE[(UP, lc.TrialCall)] = saved


# -- any sequence of events ------------------------------------------------------------------------

LEGAL_CIRCUIT = {("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("half_open", "closed"),
                 ("open", "closed")}


class LifecycleMachine(RuleBasedStateMachine):
    """Random events on a fake clock; a model of the calls in flight per generation."""

    def __init__(self):
        super().__init__()
        self.core = None
        self.now = 0.0
        self.in_flight = {}  # generation -> calls sent on it and not resolved
        self.closed = False
        self.circuit = "closed"
        self.auto_opens = 0  # automatic restarts since the worker was last up (or a trial call)
        self.run_limit = 0  # how many this run may make: max_restart_attempts, or 1 for a trial call's

    @rule(auto=st.booleans(), attempts=st.integers(1, 4), relocatable=st.booleans(), spawned=st.booleans(),
          interval=st.sampled_from([0.0, 0.5, 2.0]))
    @precondition(lambda self: self.core is None)
    def build(self, auto, attempts, relocatable, spawned, interval):
        self.config = cfg("w", auto_restart=auto, max_restart_attempts=attempts, heartbeat_interval=interval,
                             heartbeat_timeout=0.4, heartbeat_max_misses=2, start_timeout=1.0,
                             circuit_reset_timeout=3.0, relocatable=relocatable)
        self.spawned = spawned
        self.run_limit = attempts
        self.core = Lifecycle(self.config, self.now)
        self.apply(lc.Start())

    def apply(self, event):
        was = self.core.state
        actions = self.core.handle(event, self.now)
        self.carry_out(actions, was)
        return actions

    def carry_out(self, actions, was=None):
        for action in actions:
            if isinstance(action, (lc.TearDown, lc.FailInFlight)):
                self.in_flight[action.generation] = 0
            elif isinstance(action, lc.Open):
                assert not self.closed, "opened after close"
                if was == BACKOFF:
                    self.auto_opens += 1
                    assert self.auto_opens <= self.run_limit
            elif isinstance(action, lc.CircuitChanged):
                assert (self.circuit, action.state) in LEGAL_CIRCUIT, (self.circuit, action.state)
                self.circuit = action.state

    def live(self):
        return self.core is not None and self.core.live is not None

    @rule(dt=st.sampled_from([0.001, 0.05, 0.3, 1.0, 4.0]))
    @precondition(lambda self: self.core is not None)
    def time_passes(self, dt):
        self.now += dt
        self.apply(lc.TimePassed())

    @rule()
    @precondition(lambda self: self.core is not None and self.core.state == STARTING)
    def probe(self):
        self.apply(lc.ProbeDue(self.core.live))

    @rule()
    @precondition(lambda self: self.core is not None and self.core.state == STARTING)
    def answers(self):
        self.apply(lc.Started(self.core.live))
        self.auto_opens, self.run_limit = 0, self.config.options.max_restart_attempts

    @rule()
    @precondition(lambda self: self.core is not None and self.core.state == STARTING)
    def does_not_start(self):
        self.apply(lc.StartFailed(self.core.live, NO_START))

    @rule(n=st.integers(1, 3))
    @precondition(lambda self: self.core is not None and self.core.verdict() is None)
    def calls(self, n):
        permit = self.core.permit(self.now)
        if permit is not None:
            self.in_flight[self.core.live] = self.in_flight.get(self.core.live, 0) + n
            self.carry_out(self.core.call_answered(permit, self.now) if n == 1 else [])

    @rule(crash=st.booleans())
    @precondition(lambda self: self.core is not None)
    def trial_fails(self, crash):
        if self.core.permit(self.now) == "trial":
            self.carry_out(self.core.call_failed("trial", crash, self.now))
            if self.core.state == DOWN:
                self.apply(lc.TrialCall())  # a run of its own, with one attempt
                self.auto_opens, self.run_limit = 0, 1

    @rule()
    @precondition(live)
    def crashes(self):
        self.apply(lc.ChildExited(self.core.live, CRASH))

    @rule()
    @precondition(live)
    def echo(self):
        self.apply(lc.HeartbeatEchoed(self.core.live))

    @rule()
    @precondition(live)
    def drops(self):
        self.apply(lc.ConnectionDropped(self.core.live, self.spawned))

    @rule(moved=st.booleans())
    @precondition(live)
    def registry(self, moved):
        self.apply(lc.MoveSuspected(self.core.live))
        if self.core.checking:  # a driver reports a verdict only for a CheckMoved it got
            self.apply(lc.ServiceMoved(self.core.live, moved))

    @rule(generation=st.integers(0, 6))
    @precondition(lambda self: self.core is not None)
    def stale(self, generation):
        if generation != self.core.live:
            for event in (lc.ChildExited(generation, CRASH), lc.HeartbeatEchoed(generation),
                          lc.ConnectionDropped(generation), lc.Started(generation)):
                assert self.core.handle(event, self.now) == []

    @rule()
    @precondition(lambda self: self.core is not None)
    def restart(self):
        if self.closed:
            with pytest.raises(TransportClosed):
                self.core.handle(lc.RestartRequested(), self.now)
        else:
            self.apply(lc.RestartRequested())
            self.auto_opens, self.run_limit = 0, self.config.options.max_restart_attempts

    @rule()
    @precondition(lambda self: self.core is not None)
    def close(self):
        self.apply(lc.CloseRequested())
        self.closed = True

    @rule()
    @precondition(lambda self: self.core is not None)
    def exiting(self):
        self.apply(lc.Exiting())

    @rule()
    @precondition(lambda self: self.core is not None)
    def settles(self):
        """Driving time and failing every start, a restarting worker ends up or down in bounded steps."""
        for _ in range(4 * self.config.options.max_restart_attempts + 4):
            if self.core.state == STARTING:
                self.apply(lc.StartFailed(self.core.live, NO_START))
            elif self.core.state == BACKOFF:
                self.now = max(self.now, self.core.wake_at())
                self.apply(lc.TimePassed())
            else:
                break
        assert self.core.state in (IDLE, UP, DOWN, CLOSED)
        if self.core.state in (DOWN, CLOSED):
            assert isinstance(self.core.verdict(), Exception)

    @invariant()
    def calls_on_dead_connections_are_resolved(self):
        if self.core is not None:
            assert all(n == 0 for gen, n in self.in_flight.items() if gen != self.core.live)

    @invariant()
    def waiting_calls_fail_when_down_or_closed(self):
        if self.core is not None and self.core.state in (DOWN, CLOSED):
            assert isinstance(self.core.verdict(), Exception) and self.core.live is None
        if self.core is not None and self.core.verdict() is None:
            assert self.core.state == UP

    @invariant()
    def closed_stays_closed(self):
        if self.closed:
            assert self.core.state == CLOSED and not self.core.restarting

    @invariant()
    def backoff_bounded(self):
        if self.core is not None and self.core.state == BACKOFF:
            assert 0 < self.core.wake_at() - self.now <= lc.BACKOFF_CAP + 1e-9 or self.core.wake_at() <= self.now

    @invariant()
    def circuit_report_matches(self):
        if self.core is not None:
            self.carry_out(self.core.handle(lc.TimePassed(), self.now) if self.core.state != IDLE else [])
            assert self.circuit == self.core.circuit_state(self.now) or self.core.state == IDLE


LifecycleMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_any_sequence_of_events = LifecycleMachine.TestCase
