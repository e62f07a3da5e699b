"""Where a child's stdout/stderr lines go: the worker's ``on_output`` handler, else logging."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from .. import protocol

if TYPE_CHECKING:
    from .driver import Driver

output_log = logging.getLogger("multifrost.child_output")


def route_output(driver: Driver) -> Callable[[protocol.Message], None]:
    """The channel's output handler for ``driver``'s worker (stderr also feeds the crash report's tail)."""
    handler = driver.options.on_output
    name = driver.target.name

    def on_output(message: protocol.Message) -> None:
        process = driver.process
        if process is not None and message.type == protocol.STDERR:
            process.note_stderr(message.output)
        if handler is not None:
            handler(message.type, message.output)
            return
        level = logging.INFO if message.type == protocol.STDOUT else logging.WARNING
        for line in message.output.rstrip("\n").split("\n"):
            output_log.log(level, "[%s] %s", name, line)
    return on_output
