"""Request/response correlation over a ParentEnd: the parent's call path, one flavour per API.

``SyncChannel`` (channel_sync.py) for plain threads, where the calling thread does the
socket I/O itself and the thread that holds the lead is the only reader (leader/follower:
no thread hop when uncontended); ``AsyncChannel`` (channel_async.py) for asyncio, whose
add_reader callback is the only reader while calls send straight from their tasks. What
both share (pending table, decoding, routing) is in channel_base.py.
"""
from __future__ import annotations

from .channel_async import AsyncChannel
from .channel_base import OutputHandler
from .channel_sync import SyncChannel
from .channel_waiters import SignallingWaiter, read_all

#: The name parent.py knows this helper by.
_read_all = read_all

__all__ = ["AsyncChannel", "OutputHandler", "SignallingWaiter", "SyncChannel"]
