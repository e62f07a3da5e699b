"""The negotiated extensions of ``comlink_ipc_v4`` (docs/protocol.md, "Extensions"): names,
versions, the announcement in a heartbeat echo, and the extra messages and CALL metadata.

A v4 peer never sees any of this: a worker announces what it speaks in the metadata of its
heartbeat echoes, and a parent sends extension messages or CALL metadata only to a worker
that announced them.
"""
from __future__ import annotations

from typing import Any, Mapping

from .protocol import APP_ID, CANCEL as CANCEL_TYPE, CREDIT, STREAM_ITEM, _time

#: Key of the announcement in a worker's heartbeat echo metadata. A parent never puts it in
#: its own heartbeats, so an echo of the parent's metadata (the JavaScript child) never has it.
ANNOUNCE_KEY = "mf_extensions"
#: Key of the extension data in a CALL's metadata (present only towards a negotiated worker).
CALL_KEY = "mf_call"

STREAM, CANCEL, DEADLINE, TRACE = "stream", "cancel", "deadline", "trace"
#: What this implementation speaks: extension name -> highest version.
SUPPORTED: dict[str, int] = {STREAM: 1, CANCEL: 1, DEADLINE: 1, TRACE: 1}

# Extension message types (defined in protocol.py, which parses them), sent only on a
# connection where the extension was negotiated: STREAM_ITEM worker -> parent, one item of a
# streamed call; CREDIT parent -> worker, the stream may send more items; CANCEL_TYPE parent
# -> worker, stop this call or stream.

DEFAULT_WINDOW = 64

#: How a worker's ERROR starts when the call's deadline passed (before or while it ran): the
#: parent reads it as its own timeout, which it may notice a moment later than the worker.
DEADLINE_ERROR = "CallTimeoutError:"

NONE: Mapping[str, int] = {}


def negotiate(metadata: Any) -> dict[str, int] | None:
    """The extensions to use with a worker whose heartbeat echo carried ``metadata``: for each
    name both sides know, the highest version both speak. None when the echo has no announcement."""
    if not isinstance(metadata, dict):
        return None
    announced = metadata.get(ANNOUNCE_KEY)
    if not isinstance(announced, dict):
        return None
    agreed = {}
    for name, version in announced.items():
        ours = SUPPORTED.get(name)
        if ours is not None and isinstance(version, int) and not isinstance(version, bool) and version >= 1:
            agreed[name] = min(ours, version)
    return agreed


def announce(echo: dict) -> dict:
    """Add this worker's announcement to a heartbeat echo (worker side)."""
    echo["metadata"][ANNOUNCE_KEY] = SUPPORTED
    return echo


def call_extras(agreed: Mapping[str, int], timeout: float | None, traceparent: str | None,
                window: int | None) -> dict | None:
    """The ``mf_call`` map of a CALL towards a worker that agreed to ``agreed``, or None for v4."""
    if not agreed:
        return None
    extras: dict[str, Any] = {}
    if timeout is not None and DEADLINE in agreed:
        extras["timeout"] = max(0.0, float(timeout))
    if traceparent is not None and TRACE in agreed:
        extras["traceparent"] = traceparent
    if window is not None:
        extras["stream"] = {"window": window}
    return extras


def stream_item(call_id: str | None, item: Any) -> dict:
    """One item of the stream answering CALL ``call_id``."""
    return {"app": APP_ID, "id": call_id, "type": STREAM_ITEM, "timestamp": _time(), "item": item}


def credit(call_id: str, count: int) -> dict:
    """Allow the stream answering ``call_id`` to send ``count`` more items."""
    return {"app": APP_ID, "id": call_id, "type": CREDIT, "timestamp": _time(), "credit": count}


def cancel(call_id: str) -> dict:
    """Stop CALL ``call_id`` (or its stream): the caller no longer waits for it."""
    return {"app": APP_ID, "id": call_id, "type": CANCEL_TYPE, "timestamp": _time()}
