"""How a stopping worker ends its calls in flight: a grace to finish, then an error answer each."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .child import ChildWorker

log = logging.getLogger(__name__)


async def finish_in_flight(worker: ChildWorker) -> None:
    """Give calls in flight up to ``shutdown_grace`` seconds to answer (new calls are refused meanwhile).
    Streams end at once: their consumers are going away with the worker."""
    worker._ext.cancel_streams("the worker is stopping")
    pending = list(worker._tasks) + [asyncio.wrap_future(f) for f in list(worker._pool_calls)]
    if pending:
        log.info("stopping: waiting up to %s s for %d call(s) in flight", worker.shutdown_grace, len(pending))
        await asyncio.wait(pending, timeout=worker.shutdown_grace)


async def abandon_in_flight(worker: ChildWorker) -> None:
    """Answer the calls still running after the grace with an error, so that no caller waits for nothing."""
    tasks = list(worker._tasks)
    for task in tasks:
        task.cancel()  # _run_async answers the caller
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
        worker._tasks.difference_update(tasks)  # a call's task cancelled before it started never left by itself
    stuck = [(peer, msg_id) for future, (peer, msg_id) in list(worker._pool_calls.items()) if not future.done()]
    for peer, msg_id in stuck:
        worker._reply_error(peer, msg_id, f"Worker stopped before the call finished "
                                          f"(shutdown grace of {worker.shutdown_grace} s passed)")
    worker._stuck_calls = len(stuck)
    if stuck or tasks:
        log.warning("stopping: %d call(s) did not finish within the grace and were answered with an error",
                    len(stuck) + len(tasks))
