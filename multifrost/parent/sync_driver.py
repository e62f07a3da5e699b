"""The sync API's driver: calls do their I/O in the calling thread (channel.SyncChannel); one
supervisor thread feeds the core what happens while nobody calls (output, exits, heartbeat
echoes, drops, time) and carries out what it decides, waiting with poll() on a wake-up pipe."""
from __future__ import annotations

import os
import select
import threading
import time
from typing import TYPE_CHECKING, Any

from ..channel import SignallingWaiter, SyncChannel, _read_all
from ..errors import MultifrostError
from ..process import ChildProcess
from . import lifecycle as lc
from .driver import Driver, stop_process

if TYPE_CHECKING:
    from .worker import ParentWorker

_IDLE_WAIT = 1.0  # the longest the supervisor sleeps without looking at the state again


class SyncDriver(Driver):
    """Carries out the core's actions with threads, blocking calls and a wake-up pipe."""

    def __init__(self, worker: ParentWorker) -> None:
        super().__init__(worker, worker._lock)
        self.ready = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_at: float | None = None
        self._moved = False  # set by the lease watch thread
        self._dropped: int | None = None  # the generation whose connection dropped (any thread)
        self._beats: dict[str, tuple[int, SignallingWaiter]] = {}
        self._supervisor: threading.Thread | None = None

    # -- the public API's steps ---------------------------------------------------------------

    def start(self) -> MultifrostError | None:
        error = self.feed(lc.Start())
        if error is None:
            self._supervisor = threading.Thread(target=self._supervise, name="multifrost-supervisor", daemon=True)
            self._supervisor.start()
            self.target.watch(self._lease_lost)
        return error

    def close(self, grace: float) -> None:
        self.grace = grace
        actions = self.decide(lc.CloseRequested())
        self.wake()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        self.carry_out(actions)
        self.target.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def wait_ready(self, timeout: float | None, permit: str) -> tuple[SyncChannel, float | None]:
        """The worker is down, starting or held: wait for it within the call's timeout.

        Returns the channel to use and what is left of the timeout.
        """
        steps = self.wait_steps(timeout, permit)
        try:
            while True:
                remaining = next(steps)
                self.ready.wait(_IDLE_WAIT if remaining is None else min(remaining, _IDLE_WAIT))
        except StopIteration as done:
            return done.value

    def wake(self) -> None:
        """Make the supervisor look at the state again."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except (BlockingIOError, OSError):
                pass

    # -- actions ---------------------------------------------------------------------------

    def open(self, action: lc.Open) -> MultifrostError | None:
        """Open the end (spawning or discovering), then probe until the worker echoes (blocking);
        returns the start error, None once started."""
        steps = self.open_steps(action.generation)
        try:
            step = next(steps)
            while True:
                try:
                    outcome = self._step(step)
                except MultifrostError as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(outcome)
        except StopIteration as done:
            return done.value

    def _step(self, step: tuple) -> Any:
        if step[0] == "open":
            return self.target.open()
        if step[0] == "release":
            return _release(step[1], step[2], False, self.grace)
        channel, msg_id, payload, wait = step[1:]
        return channel.request(msg_id, payload, wait, "start")

    def new_channel(self, end: Any, generation: int, process: ChildProcess | None) -> SyncChannel:
        channel = SyncChannel(end, self.on_output, self.options.limits)
        channel.on_drop = lambda: self._on_drop(generation)
        return channel

    def tear_down(self, action: lc.TearDown) -> None:
        channel, process = self.detach(action)
        _release(channel, process, action.shutdown, self.grace)
        self._beats = {k: v for k, v in self._beats.items() if v[0] != action.generation}

    def probe(self, action: lc.Probe) -> None:
        """One heartbeat on a thread of its own (the supervisor must stay free): its echo releases held calls."""
        channel = self.channel

        def run() -> None:
            msg_id, payload = self.heartbeat()
            try:
                self.echoed(action.generation, None, channel.request(msg_id, payload, action.wait, "probe"))
            except MultifrostError:  # no answer: heartbeats and the registry decide what comes next
                pass
        if channel is not None and self.generation == action.generation:
            threading.Thread(target=run, name="multifrost-probe", daemon=True).start()

    def send_heartbeat(self, action: lc.SendHeartbeat) -> None:
        channel = self.channel
        if channel is None or self.generation != action.generation:
            return
        msg_id, payload = self.heartbeat(action.msg_id)
        try:
            beat = channel.submit(msg_id, payload, lambda: SignallingWaiter(self._wake_w))
        except MultifrostError:
            return
        self._beats[msg_id] = (action.generation, beat)  # type: ignore[assignment]  # the factory made it

    def forget_heartbeat(self, action: lc.ForgetHeartbeat) -> None:
        self._beats.pop(action.msg_id, None)
        channel = self.channel
        if channel is not None and self.generation == action.generation:
            channel.forget(action.msg_id)

    def check_moved(self, action: lc.CheckMoved) -> None:
        """Ask the registry (in the supervisor: nothing else waits on it meanwhile)."""
        try:
            moved = self.target.moved()
        except MultifrostError as exc:
            self.log.warning("cannot read the registry: %s", exc)
            moved = False
        self.feed(lc.ServiceMoved(action.generation, moved))

    def wait_until(self, action: lc.WaitUntil) -> None:
        self._wake_at = action.when
        if threading.current_thread() is not self._supervisor:
            self.wake()

    # -- the supervisor --------------------------------------------------------------------

    def _supervise(self) -> None:
        """The sync API's one background thread: output, exits, heartbeat echoes, drops, time."""
        while self.core.state != lc.CLOSED:
            with self.lock:
                channel, process, generation = self.channel, self.process, self.generation
                up = self.core.state == lc.UP
            fds = [self._wake_r] + ([process.exit_fd, process.stderr_fd] if process is not None and up else [])
            wake_at = self._wake_at
            wait = _IDLE_WAIT if wake_at is None else min(_IDLE_WAIT, max(0.0, wake_at - time.monotonic()))
            try:
                ready = channel.poll_idle(wait, fds) if channel is not None else _poll(fds, wait)
            except (OSError, ValueError, MultifrostError):
                ready = set()  # the channel was replaced or closed under us; look again
            if self.core.state == lc.CLOSED:
                return
            if self._wake_r in ready:
                _read_all(self._wake_r)
            self._events(ready, channel, process, generation)
            self.feed(lc.TimePassed())

    def _events(self, ready: set[int], channel: Any, process: ChildProcess | None, generation: int | None) -> None:
        if generation is None:
            return
        if self._moved:
            self._moved = False
            self.feed(lc.MoveSuspected(generation))
        if process is not None and process.stderr_fd in ready:
            process.read_stderr()
        if process is not None and process.exit_fd in ready:
            _drain_last_words(channel)
            self.exited(generation, process)
        dropped, self._dropped = self._dropped, None
        if dropped is not None:
            self.feed(lc.ConnectionDropped(dropped, process is not None))
        for msg_id, (beat_generation, beat) in list(self._beats.items()):
            if beat.done:
                del self._beats[msg_id]
                if beat.error is None:
                    self.echoed(beat_generation, msg_id, beat.outcome(), beat.arrived)

    def _lease_lost(self) -> None:
        """(lease watch thread) The service instance in use left the registry: wake the supervisor."""
        self._moved = True
        self.wake()

    def _on_drop(self, generation: int) -> None:
        """A channel saw its connection dropped (any thread): the supervisor tells the core."""
        self._dropped = generation
        self.wake()


def _release(channel: SyncChannel | None, process: ChildProcess | None, shutdown: bool, grace: float) -> None:
    """Stop a detached child (after SHUTDOWN the end stays open meanwhile, so that it leaves) and
    close its channel."""
    if channel is not None and not shutdown:
        channel.close()
        channel.end.close()
    if process is not None:
        stop_process(process, shutdown, grace)
    if channel is not None and shutdown:
        channel.close()
        channel.end.close()


def _drain_last_words(channel: SyncChannel | None) -> None:
    """The child exited: replies it sent just before may still be on their way through
    ZeroMQ's I/O thread; hand out what arrives within ``LAST_WORDS`` seconds."""
    if channel is None:
        return
    deadline = time.monotonic() + lc.LAST_WORDS
    while (remaining := deadline - time.monotonic()) > 0:
        channel.poll_idle(remaining, [])
    channel.drain()


def _poll(fds: list[int], timeout: float) -> set[int]:
    """Wait up to ``timeout`` s for one of ``fds`` to be readable; which are."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(max(0, int(timeout * 1000 + 0.999)))}
