"""The async API's driver: everything on the caller's event loop. The channel drains from
``loop.add_reader``; the child's exit and stderr are readers too; one timer feeds the core the
passing of time; opening, stopping a child and asking the registry are tasks."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Coroutine

from ..channel import AsyncChannel
from ..errors import MultifrostError
from ..process import ChildProcess
from . import lifecycle as lc
from .driver import Driver, stop_process

if TYPE_CHECKING:
    from .worker import ParentWorker


class AsyncDriver(Driver):
    """Carries out the core's actions with tasks, futures and loop callbacks."""

    def __init__(self, worker: ParentWorker) -> None:
        super().__init__(worker, worker._lock)
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping: set[asyncio.Future] = set()  # child processes being stopped by a teardown
        self._beats: dict[str, asyncio.Task] = {}

    # -- the public API's steps ---------------------------------------------------------------

    async def start(self) -> MultifrostError | None:
        error = await self.feed(lc.Start())
        if error is None:
            loop = self.loop

            def lease_lost() -> None:  # (lease watch thread)
                loop.call_soon_threadsafe(self._lease_lost)
            self.target.watch(lease_lost)
        return error

    async def restart(self) -> MultifrostError | None:
        return await self.feed(lc.RestartRequested())

    def feed(self, event: lc.Event) -> Any:
        """As Driver.feed; an Open comes back as an awaitable of its start error."""
        opening = super().feed(event)
        return opening if opening is not None else _done(self.loop)

    async def close(self, grace: float) -> None:
        self.grace = grace
        actions = self.decide(lc.CloseRequested())
        if self._timer is not None:
            self._timer.cancel()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.carry_out(actions)
        await asyncio.gather(*self._stopping)
        await self.target.aclose()

    async def wait_ready(self, timeout: float | None, permit: str) -> tuple[AsyncChannel, float | None]:
        """The worker is down, starting or held: wait for it within the call's timeout."""
        steps = self.wait_steps(timeout, permit)
        try:
            while True:
                remaining = next(steps)
                try:
                    await asyncio.wait_for(self.ready.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        except StopIteration as done:
            return done.value

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- actions ---------------------------------------------------------------------------

    def open(self, action: lc.Open) -> asyncio.Task:
        return self.spawn(self._open(action.generation))

    async def _open(self, generation: int) -> MultifrostError | None:
        """Open the end (spawning or discovering), then probe until the worker echoes; returns the
        start error, None once started."""
        await asyncio.gather(*self._stopping)  # the child this one replaces is gone first
        steps = self.open_steps(generation)
        try:
            step = next(steps)
            while True:
                try:
                    outcome = await self._step(step)
                except MultifrostError as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(outcome)
        except StopIteration as done:
            return done.value

    async def _step(self, step: tuple) -> Any:
        if step[0] == "open":
            return await self.target.aopen()
        if step[0] == "release":
            return await self._release(step[1], step[2], False)
        channel, msg_id, payload, wait = step[1:]
        return await channel.request(msg_id, payload, wait, "start")

    def new_channel(self, end: Any, generation: int, process: ChildProcess | None) -> AsyncChannel:
        channel = AsyncChannel(end, self.on_output, self.options.limits)
        channel.on_drop = lambda: self.feed(lc.ConnectionDropped(generation, process is not None))
        return channel

    def on_started(self, generation: int, process: ChildProcess | None) -> None:
        """An exit of the child from now on is a crash: watch its exit and stderr descriptors."""
        if process is not None:
            self.loop.add_reader(process.stderr_fd, process.read_stderr)
            self.loop.add_reader(process.exit_fd, self._on_exit, generation, process)

    def tear_down(self, action: lc.TearDown) -> None:
        process = self.process if self.generation == action.generation else None
        if process is not None:
            self._unwatch(process)
        channel, process = self.detach(action)
        stopping = asyncio.ensure_future(self._release(channel, process, action.shutdown))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)

    async def _release(self, channel: AsyncChannel | None, process: ChildProcess | None, shutdown: bool) -> None:
        """Stop a detached child in a thread (after SHUTDOWN the end stays open meanwhile, so that
        it leaves) and close its channel; close() waits for it even if the task that began it ends."""
        if channel is not None and not shutdown:
            channel.close()
            channel.end.close()
        try:
            if process is not None:
                await asyncio.to_thread(stop_process, process, shutdown, self.grace)
        finally:
            if channel is not None and shutdown:
                channel.close()
                channel.end.close()

    def probe(self, action: lc.Probe) -> None:
        channel = self.channel
        if channel is not None and self.generation == action.generation:
            self.spawn(self._beat(channel, action.generation, action.wait, None))

    def send_heartbeat(self, action: lc.SendHeartbeat) -> None:
        """A heartbeat whose echo the core awaits (it notices an overdue one itself: no timeout here)."""
        channel = self.channel
        if channel is not None and self.generation == action.generation:
            task = self._beats[action.msg_id] = self.spawn(self._beat(channel, action.generation, None, action.msg_id))
            task.add_done_callback(lambda _: self._beats.pop(action.msg_id, None))

    async def _beat(self, channel: AsyncChannel, generation: int, timeout: float | None, msg_id: str | None) -> None:
        """One heartbeat (``msg_id``) or probe (None) and its echo."""
        beat_id, payload = self.heartbeat(msg_id)
        try:
            reply, arrived = await channel.timed_request(beat_id, payload, timeout, "heartbeat")
        except MultifrostError:
            return
        self.echoed(generation, msg_id, reply, arrived)

    def forget_heartbeat(self, action: lc.ForgetHeartbeat) -> None:
        task = self._beats.pop(action.msg_id, None)
        if task is not None:
            task.cancel()

    def check_moved(self, action: lc.CheckMoved) -> None:
        self.spawn(self._check_moved(action.generation))

    async def _check_moved(self, generation: int) -> None:
        try:
            moved = await asyncio.to_thread(self.target.moved)
        except MultifrostError as exc:
            self.log.warning("cannot read the registry: %s", exc)
            moved = False
        self.feed(lc.ServiceMoved(generation, moved))

    def wait_until(self, action: lc.WaitUntil) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if action.when is not None and self.core.state != lc.CLOSED:
            self._timer = self.loop.call_later(max(0.0, action.when - time.monotonic()), self._time_passed)

    def _time_passed(self) -> None:
        self._timer = None
        self.feed(lc.TimePassed())

    # -- loop callbacks --------------------------------------------------------------------

    def _lease_lost(self) -> None:
        """The service instance in use left the registry: the core decides whether to look."""
        if self.generation is not None:
            self.feed(lc.MoveSuspected(self.generation))

    def _on_exit(self, generation: int, process: ChildProcess) -> None:
        """The child exited on its own (exit fd reader): let its last replies in, then tell the core."""
        self._unwatch(process)
        self.loop.call_later(lc.LAST_WORDS, self._on_exit_drained, generation, process)

    def _on_exit_drained(self, generation: int, process: ChildProcess) -> None:
        if self.generation == generation and self.channel is not None:
            self.channel.drain()  # replies and output the child sent just before it exited
        self.exited(generation, process)

    def _unwatch(self, process: ChildProcess) -> None:
        self.loop.remove_reader(process.stderr_fd)
        self.loop.remove_reader(process.exit_fd)


def _done(loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    future = loop.create_future()
    future.set_result(None)
    return future
