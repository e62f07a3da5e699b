"""The ``multifrost.wire`` logger: at DEBUG, one record for every message a parent or a
worker sends or receives, for inspecting traffic without patching anything.

Off (the default), a message costs one level check: call sites do
``if wire_debug(DEBUG): note(...)``. Each record carries, in ``extra``: ``direction``
("sent"/"received"), ``type``, ``request_id``, ``function``, ``namespace``, ``size`` (bytes on
the wire) and ``peer``, plus the worker context of the logger it went through (``worker_id``,
``service_id``, ``pid``).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from .codec import Pieces, unpack_message
from .errors import ProtocolError

log = logging.getLogger(__name__)
DEBUG = logging.DEBUG
#: The one level check a message pays: ``wire_debug(DEBUG)`` (follows setLevel at once).
wire_debug = log.isEnabledFor


def note(logger: logging.Logger | logging.LoggerAdapter, direction: str, payload: bytes | bytearray | memoryview | Pieces,
         peer: str, message: Mapping[str, Any] | None = None) -> None:
    """Record one message; ``message`` is the decoded map when the caller has it (else decoded here)."""
    if message is None:
        try:
            message = unpack_message(bytes(payload) if isinstance(payload, Pieces) else payload)
        except (ProtocolError, ValueError):
            message = {}
    kind = message.get("type")
    function = message.get("function")
    namespace = message.get("namespace")
    what = f" {function}()" if function is not None else ""
    where = f" in {namespace}" if namespace is not None else ""
    arrow = "to" if direction == "sent" else "from"
    logger.debug("%s %s %s%s%s, %d bytes, %s %s", direction, kind, message.get("id"), what, where, len(payload),
                 arrow, peer,
                 extra={"direction": direction, "type": kind, "request_id": message.get("id"), "function": function,
                        "namespace": namespace, "size": len(payload), "peer": peer})
