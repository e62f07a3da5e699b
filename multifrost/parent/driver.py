"""What the sync and the async driver share: feeding the lifecycle core and carrying out the
actions that need no waiting (the waiting ones, opening and stopping, are each driver's own)."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Generator

from .. import extensions, protocol
from ..codec import pack_message
from ..errors import CallTimeoutError, MultifrostError, WorkerCrashedError, WorkerStartError
from ..process import ChildProcess
from . import lifecycle as lc
from .output import route_output

if TYPE_CHECKING:
    from .worker import ParentWorker

#: The shared sequences below: each yields what its driver does next, which sends back the outcome.
Steps = Generator[Any, Any, Any]

CLOSE_GRACE = 1.0  # default seconds a child gets to exit after SHUTDOWN, and again after SIGTERM
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING}


def new_core(worker: ParentWorker) -> lc.Lifecycle:
    """The lifecycle core for ``worker``'s target and options."""
    options, target = worker.options, worker._target
    config = lc.Config(target.describe(), options, target.relocatable, protocol.new_id())
    return lc.Lifecycle(config, time.monotonic())


class Driver:
    """The live connection (channel, child process, generation) and the core's actions."""

    def __init__(self, worker: ParentWorker, lock: ContextManager[Any] | None = None) -> None:
        self.worker = worker
        self.core: lc.Lifecycle = worker._core
        self.target = worker._target
        self.options = worker.options
        self.log = worker._log
        self.lock: ContextManager[Any] = lock or contextlib.nullcontext()
        self.channel: Any = None  # a SyncChannel or an AsyncChannel; None while down or closed
        self.process: ChildProcess | None = None
        self.generation: int | None = None  # of the channel and process above
        self.grace = CLOSE_GRACE  # for the close's teardown
        self.ready: Any  # a threading.Event or an asyncio.Event: set while calls may go (or must fail)
        self.on_output: Callable[[protocol.Message], None] = route_output(self)
        self._handlers: dict[type, Callable[[Any], Any]] = {
            lc.HoldCalls: lambda a: self.ready.clear(),
            lc.ReleaseCalls: lambda a: self.ready.set(),
            lc.CircuitChanged: self._circuit_changed,
            lc.Restarted: self._restarted,
            lc.Log: self._logged,
            lc.FailInFlight: self._fail_in_flight,
            lc.WaitUntil: self.wait_until,
            lc.Open: self.open,
            lc.TearDown: self.tear_down,
            lc.Probe: self.probe,
            lc.SendHeartbeat: self.send_heartbeat,
            lc.ForgetHeartbeat: self.forget_heartbeat,
            lc.CheckMoved: self.check_moved,
        }

    @property
    def metrics(self) -> Any:
        return self.worker.metrics  # (a test may swap it after start)

    # -- feeding the core -----------------------------------------------------------------

    def decide(self, event: lc.Event) -> list[lc.Action]:
        with self.lock:
            return self.core.handle(event, time.monotonic())

    def feed(self, event: lc.Event) -> Any:
        """Hand ``event`` to the core and carry out what it says; returns what ``open`` returned, if anything."""
        return self.carry_out(self.decide(event))

    def carry_out(self, actions: list[lc.Action]) -> Any:
        result = None
        for action in actions:
            outcome = self._handlers[type(action)](action)
            if isinstance(action, lc.Open):
                result = outcome
        return result

    # -- each driver's own ------------------------------------------------------------------

    def open(self, action: lc.Open) -> Any:
        raise NotImplementedError

    def tear_down(self, action: lc.TearDown) -> None:
        raise NotImplementedError

    def probe(self, action: lc.Probe) -> None:
        raise NotImplementedError

    def send_heartbeat(self, action: lc.SendHeartbeat) -> None:
        raise NotImplementedError

    def forget_heartbeat(self, action: lc.ForgetHeartbeat) -> None:
        raise NotImplementedError

    def check_moved(self, action: lc.CheckMoved) -> None:
        raise NotImplementedError

    def wait_until(self, action: lc.WaitUntil) -> None:
        raise NotImplementedError

    # -- shared pieces ----------------------------------------------------------------------

    def install(self, generation: int, channel: Any, process: ChildProcess | None) -> bool:
        """Make a just-opened connection the live one; False when the core moved on meanwhile
        (a close, a restart): the caller then releases it."""
        channel.wire = self.worker._wire_log(process)
        with self.lock:
            if self.core.live != generation:
                return False
            self.channel, self.process, self.generation = channel, process, generation
            return True

    def detach(self, action: lc.TearDown) -> tuple[Any, ChildProcess | None]:
        """A teardown's first step: forget the channel and the process (``pid`` is None from
        here), then fail the calls in flight with the reason; returns the two."""
        with self.lock:
            if self.generation != action.generation:
                return None, None
            channel, process = self.channel, self.process
            self.channel = self.process = self.generation = None
        if channel is not None:
            if action.shutdown and process is not None:
                try:  # through the channel: its I/O lock keeps other threads off the end meanwhile
                    channel.post(pack_message(protocol.shutdown()))
                except MultifrostError:  # the channel failed or its end broke: stopping the process still stops it
                    pass
            channel.fail_all(action.reason, final=True)
        return channel, process

    def open_steps(self, generation: int) -> Steps:
        """Opening ``generation`` for both drivers, as steps each runs with its own I/O: yields
        ``("open",)`` (send back the target's end and child), ``("release", channel, process)``
        and ``("probe", channel, msg_id, payload, wait)`` (send back the echo); a failed step is
        thrown in. Returns the start error, or None once the worker answered; the core hears either."""
        try:
            end, process = yield ("open",)
        except MultifrostError as exc:  # a failed spawn, or (connect mode) the service not found
            self.feed(lc.StartFailed(generation, exc))
            return exc
        channel = self.new_channel(end, generation, process)
        if not self.install(generation, channel, process):
            yield ("release", channel, process)
            return self.stale_start()
        while True:
            probe = self.start_probe(generation)
            if not isinstance(probe, lc.Probe):
                if isinstance(probe, MultifrostError):
                    self.feed(lc.StartFailed(generation, probe))
                    return probe
                return self.stale_start()
            msg_id, payload = self.heartbeat()
            try:
                reply = yield ("probe", channel, msg_id, payload, probe.wait)
            except CallTimeoutError:
                try:
                    self.check_start(channel, process)
                except MultifrostError as exc:
                    self.feed(lc.StartFailed(generation, exc))
                    return exc
                continue
            except MultifrostError as exc:  # torn down meanwhile (a close, a restart)
                self.feed(lc.StartFailed(generation, exc))
                return exc
            self.on_started(generation, process)
            self.started(generation, reply, channel)
            return None

    def new_channel(self, end: Any, generation: int, process: ChildProcess | None) -> Any:
        raise NotImplementedError

    def on_started(self, generation: int, process: ChildProcess | None) -> None:
        """Just before the core hears that ``generation`` answered (a driver may start watching it)."""

    def wait_steps(self, timeout: float | None, permit: str) -> Steps:
        """A call finds the worker down, starting or held, for both drivers: yields how long to
        wait for ``ready`` (None: no limit) until the core's verdict says go; returns the channel
        and what is left of the timeout, or raises the verdict's error or CallTimeoutError."""
        if permit == "trial":
            self.feed(lc.TrialCall())
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            channel, verdict = self.ready_channel()
            if verdict is None:
                return channel, None if deadline is None else max(0.0, deadline - time.monotonic())
            if isinstance(verdict, MultifrostError):
                raise verdict
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise CallTimeoutError(f"{self.target.describe()} did not come back within the timeout")
            yield remaining

    def start_probe(self, generation: int) -> lc.Probe | MultifrostError | None:
        """What the opener does next: a Probe, the start error (timed out), or None (stale)."""
        actions = self.decide(lc.ProbeDue(generation))
        for action in actions:
            if isinstance(action, lc.Probe):
                return action
            if isinstance(action, lc.StartTimedOut):
                tail = self.process.stderr_tail() if self.process is not None else ""
                return WorkerStartError(f"{self.target.describe()} did not answer within "
                                        f"start_timeout={self.options.start_timeout} s", stderr_tail=tail)
        return None

    def stale_start(self) -> MultifrostError | None:
        """A start the core moved on from (a close, another restart): why, for its caller, if it failed."""
        verdict = self.core.verdict()
        return verdict if isinstance(verdict, MultifrostError) else None

    def check_start(self, channel: Any, process: ChildProcess | None) -> None:
        """A start-up probe went unanswered: raise if the handshake was refused or the child exited
        (not chained to the probe's timeout, which says nothing the exit does not)."""
        channel.end.check()  # a refused security handshake: AuthenticationError now, not a timeout
        if process is not None:
            process.read_stderr()
            if process.returncode is not None:
                raise WorkerStartError(f"{self.target.describe()} {process.describe_exit()} before it connected",
                                       exit_code=process.returncode, stderr_tail=process.stderr_tail()) from None

    def started(self, generation: int, reply: protocol.Message, channel: Any) -> None:
        self.note_extensions(reply, channel)  # issue 15
        self.feed(lc.Started(generation))

    def crash_error(self, process: ChildProcess) -> WorkerCrashedError:
        return WorkerCrashedError(f"{self.target.describe()} {process.describe_exit()}; calls in flight failed",
                                  exit_code=process.returncode, stderr_tail=process.stderr_tail())

    def exited(self, generation: int | None, process: ChildProcess) -> None:
        """The child of ``generation`` exited on its own (its last replies are in)."""
        if generation is not None:
            self.feed(lc.ChildExited(generation, self.crash_error(process), process.pid))

    def echoed(self, generation: int | None, msg_id: str | None, reply: protocol.Message,
               arrived: float | None = None) -> float:
        """An echo came back (at ``arrived``, default now): note the RTT and tell the core."""
        self.note_extensions(reply)  # issue 15
        sent = reply.hb_timestamp
        rtt = max(0.0, ((arrived or time.time()) - sent) * 1000) if sent is not None else 0.0
        self.metrics.heartbeat(rtt)
        if generation is not None:
            self.feed(lc.HeartbeatEchoed(generation, msg_id))
        return rtt

    def note_extensions(self, reply: protocol.Message, channel: Any = None) -> None:
        """issue 15 hook: a heartbeat echo that carries the worker's announcement sets what the channel may use."""
        agreed = extensions.negotiate(reply.metadata)
        channel = channel or self.channel
        if agreed is not None and channel is not None:
            channel.extensions = agreed

    def ping_target(self) -> tuple[Any, int | None]:
        """The channel a ping goes out on and its generation; raises when there is none."""
        with self.lock:
            error = self.core.ping_verdict()
            if error is not None:
                raise error
            return self.channel, self.generation

    def ready_channel(self) -> tuple[Any, MultifrostError | bool | None]:
        """For a waiting call: the channel and the core's verdict (None: go; True: wait; an error)."""
        with self.lock:
            verdict = self.core.verdict()
            if verdict is None and self.channel is None:
                verdict = True
            return self.channel, verdict

    def heartbeat(self, msg_id: str | None = None) -> tuple[str, bytes]:
        message = protocol.heartbeat(msg_id)
        return message["id"], pack_message(message)

    def _fail_in_flight(self, action: lc.FailInFlight) -> None:
        """A dropped connection: its calls in flight fail now, unless the child died (its exit
        fails them as a crash, with its exit code)."""
        channel, process = self.channel, self.process
        if channel is None or self.generation != action.generation:
            return
        if process is not None and process.returncode is not None:
            return
        try:
            channel.drain()
        except MultifrostError:  # closed meanwhile
            return
        channel.fail_all(action.error)

    def _circuit_changed(self, action: lc.CircuitChanged) -> None:
        self.metrics.circuit_state = action.state

    def _restarted(self, action: lc.Restarted) -> None:
        self.metrics.restarts += 1

    def _logged(self, action: lc.Log) -> None:
        extra = dict(action.extra) if action.extra else {"pid": self.process.pid if self.process else None}
        self.log.log(_LEVELS[action.level], "%s", action.message, extra=extra)


def stop_process(process: ChildProcess, shutdown: bool, grace: float) -> None:
    """After SHUTDOWN (if sent), give the child ``grace`` s to exit; then SIGTERM, ``grace`` s
    more, and SIGKILL to its whole session, which also ends what it left running."""
    if shutdown:
        process.wait(grace)
    process.stop(grace)
    process.close()
