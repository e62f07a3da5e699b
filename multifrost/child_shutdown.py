"""How a stopping worker ends its calls in flight: a grace to finish, then an error answer each.

The asyncio path awaits tasks and pool calls; the PollLoop path (a worker without async
methods) runs its loop until the pool calls are done. Both answer what is left the same way."""
from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .child import ChildWorker
    from .child_loop import PollLoop

log = logging.getLogger(__name__)


def _in_flight(worker: ChildWorker) -> list[Future]:
    """End the streams (their consumers are going away with the worker); the pool calls in flight."""
    worker._ext.cancel_streams("the worker is stopping")
    return list(worker._pool_calls)


def _waiting(worker: ChildWorker, count: int) -> None:
    log.info("stopping: waiting up to %s s for %d call(s) in flight", worker.shutdown_grace, count)


async def finish_in_flight(worker: ChildWorker) -> None:
    """Give calls in flight up to ``shutdown_grace`` seconds to answer (new calls are refused meanwhile)."""
    import asyncio

    pending = list(worker._tasks) + [asyncio.wrap_future(f) for f in _in_flight(worker)]
    if pending:
        _waiting(worker, len(pending))
        await asyncio.wait(pending, timeout=worker.shutdown_grace)


def finish_in_flight_on(worker: ChildWorker, loop: PollLoop) -> None:
    """``finish_in_flight`` on a PollLoop: it serves on (heartbeats, refusals) while it waits."""
    pending = _in_flight(worker)
    if pending:
        _waiting(worker, len(pending))
        for future in pending:  # wake the loop to look again
            future.add_done_callback(lambda _: _wake(loop))
        loop.run_until(lambda: all(f.done() for f in pending), timeout=worker.shutdown_grace)


def _wake(loop: PollLoop) -> None:
    try:
        loop.call_soon_threadsafe(_nothing)
    except RuntimeError:  # the loop closed meanwhile (the grace passed)
        pass


def _nothing() -> None:
    pass


async def abandon_in_flight(worker: ChildWorker) -> None:
    """Answer the calls still running after the grace with an error, so that no caller waits for nothing."""
    import asyncio

    tasks = list(worker._tasks)
    for task in tasks:
        task.cancel()  # _run_async answers the caller
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
        worker._tasks.difference_update(tasks)  # a call's task cancelled before it started never left by itself
    answer_stuck(worker, len(tasks))


def answer_stuck(worker: ChildWorker, cancelled: int = 0) -> None:
    """Answer the pool calls still running with an error (``cancelled`` tasks were answered already)."""
    stuck = [(peer, msg_id) for future, (peer, msg_id) in list(worker._pool_calls.items()) if not future.done()]
    for peer, msg_id in stuck:
        worker._reply_error(peer, msg_id, f"Worker stopped before the call finished "
                                          f"(shutdown grace of {worker.shutdown_grace} s passed)")
    worker._stuck_calls = len(stuck)
    if stuck or cancelled:
        log.warning("stopping: %d call(s) did not finish within the grace and were answered with an error",
                    len(stuck) + cancelled)
