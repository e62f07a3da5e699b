"""``memory://name``: an in-process transport in pure Python (no ZeroMQ needed).

Bound names live in a process-wide registry. Either end may bind (the parent in spawn
mode, the child in connect mode); the other end connects to the name and gets a *link*.
Binding a taken name raises TransportError ("address in use"); connecting to a name that
nothing is bound to raises TransportError naming it.

Each direction of a link is a bounded queue holding at most
``min(sender sndhwm, receiver rcvhwm)`` payloads (0 means unbounded, as in ZeroMQ):
``send_nowait`` returns False when it is full, and the sender's ``fileno()`` turns readable
once the receiver has taken one. A bound parent end has at most one child; until one
connects its sends return False, like a bound ZeroMQ DEALER without a peer.

When the bound end closes, connected ends stay open and wait: their sends return False
(nothing is queued for a peer that is gone) and the next end that binds the same name
adopts them, with new peer identities, as a ZeroMQ reconnect would. A payload larger than
the receiver's ``max_message_size`` is dropped with a log line (ZeroMQ drops the whole
connection instead).

``fileno()`` is an eventfd (a pipe off Linux) rung when a payload arrives, when room to
send appears, or when a peer attaches; it is cleared by ``recv_nowait`` finding nothing,
and by a refused ``send_nowait`` (which then tells the reader, see ``set_reader``, when a
payload still waits). The two ends of a link may be used from different threads
at once (one thread per end): each end guards its queue with its own lock.
"""
from __future__ import annotations

import itertools
import logging
import sys
import threading
from typing import Callable
from collections import deque

from ..codec import Payload
from ..errors import TransportClosed, TransportError
from .base import ChildEnd, ParentEnd, Wakeup

log = logging.getLogger(__name__)

_registry_lock = threading.Lock()
_bound: dict[str, "_MemoryEnd"] = {}
#: Connected ends whose bound peer closed, by name, waiting for the next bind.
_waiting: dict[str, list["_MemoryEnd"]] = {}
_identities = itertools.count(1)


def _capacity(sndhwm: int, rcvhwm: int) -> int:
    limits = [hwm for hwm in (sndhwm, rcvhwm) if hwm > 0]
    return min(limits) if limits else sys.maxsize


class _Link:
    """One parent-child connection; counts are guarded by the receiving end's lock."""

    __slots__ = ("parent", "child", "identity", "to_child", "cap_to_child", "cap_to_parent",
                 "parent_blocked", "heard")

    def __init__(self, parent: "MemoryParentEnd", child: "MemoryChildEnd") -> None:
        self.parent: MemoryParentEnd | None = parent
        self.child: MemoryChildEnd | None = child
        self.identity = b"\x00" + next(_identities).to_bytes(4, "big")
        self.to_child = 0
        self.cap_to_child = _capacity(parent._sndhwm, child._rcvhwm)
        self.cap_to_parent = _capacity(child._sndhwm, parent._rcvhwm)
        self.parent_blocked = False
        self.heard = False


class _MemoryEnd:
    """State and plumbing shared by both memory ends."""

    _is_parent: bool
    _closed: bool
    _wake_waiters: Callable[[], None]  # from _End, which each concrete end also derives from
    _hidden: Callable[[], None]  # from _End: tell the reader a payload waits unannounced
    _detach_all: Callable[[], None]  # each concrete end's own

    def _setup(self, name: str, bind: bool, sndhwm: int, rcvhwm: int, max_message_size: int) -> None:
        self._name = name
        self.endpoint = f"memory://{name}"
        self._bind = bind
        self._sndhwm = sndhwm
        self._rcvhwm = rcvhwm
        self._max_message_size = max_message_size
        self._lock = threading.Lock()
        self._inbox: deque = deque()
        self._signalled = False
        self._send_refused = False
        self._closed = False
        self._wakeup = Wakeup()
        try:
            with _registry_lock:
                if bind:
                    self._bind_name()
                else:
                    self._connect_name()
        except BaseException:
            self._wakeup.close()
            raise

    # registry (called with _registry_lock held) ---------------------------------------------

    def _bind_name(self) -> None:
        if self._name in _bound:
            raise TransportError(f"cannot bind {self.endpoint}: address in use")
        _bound[self._name] = self
        waiting = _waiting.pop(self._name, [])
        for other in waiting:
            if other._is_parent != self._is_parent and self._accepts_link():
                self._attach(other)
            else:
                _waiting.setdefault(self._name, []).append(other)

    def _connect_name(self) -> None:
        binder = _bound.get(self._name)
        if binder is None:
            raise TransportError(f"cannot connect to {self.endpoint}: nothing is bound to that name")
        if binder._is_parent == self._is_parent:
            kind = "parent" if self._is_parent else "child"
            raise TransportError(
                f"cannot connect to {self.endpoint}: it is bound by another {kind} end; "
                "a parent end and a child end connect to each other"
            )
        if not binder._accepts_link():
            raise TransportError(f"cannot connect to {self.endpoint}: its parent end already has a child")
        binder._attach(self)

    def _attach(self, other: "_MemoryEnd") -> None:
        parent, child = (self, other) if self._is_parent else (other, self)
        assert isinstance(parent, MemoryParentEnd) and isinstance(child, MemoryChildEnd)
        link = _Link(parent, child)
        parent._link = link
        child._links[link.identity] = link
        parent._notify()

    def _accepts_link(self) -> bool:
        raise NotImplementedError

    def _wait_for_rebind(self) -> None:
        """The bound peer went away: wait (connected ends only) for the next bind of the name."""
        if not self._bind and not self._closed:
            _waiting.setdefault(self._name, []).append(self)

    # readiness --------------------------------------------------------------------------------

    def _notify(self) -> None:
        """Something changed for this end (room to send, a peer came or went): ring."""
        with self._lock:
            self._send_refused = False
            if not self._signalled and not self._closed:
                self._signalled = True
                self._wakeup.ring()

    def _unsignal(self) -> None:
        """Clear the descriptor; called with self._lock held."""
        if self._signalled:
            self._signalled = False
            self._wakeup.clear()

    def _refused(self, still_blocked) -> bool:
        """A send was refused: clear the descriptor unless room appeared meanwhile. Returns False."""
        with self._lock:
            hidden = False
            if still_blocked():
                self._send_refused = True
                self._unsignal()
                hidden = bool(self._inbox)
        if hidden:  # the cleared descriptor no longer says that a payload waits
            self._hidden()
        return False

    @property
    def writable(self) -> bool:
        return not self._send_refused

    def fileno(self) -> int:
        if self._closed:
            raise TransportClosed(f"transport end {self.endpoint} is closed")
        return self._wakeup.fd

    @property
    def closed(self) -> bool:
        return self._closed

    def _pop_locked(self):
        """The next inbox item, or None (clearing the wake-up signal); under ``self._lock``."""
        if self._closed:
            raise self._closed_error()
        if not self._inbox:
            self._unsignal()
            return None
        return self._inbox.popleft()

    def _closed_error(self) -> TransportClosed:
        return TransportClosed(f"transport end {self.endpoint} is closed")

    def _too_big(self, payload: bytes, receiver: "_MemoryEnd") -> bool:
        if len(payload) > receiver._max_message_size:
            log.warning("%s: dropped a payload of %d bytes, over the receiver's max_message_size %d",
                        self.endpoint, len(payload), receiver._max_message_size)
            return True
        return False

    def close(self, linger: float = 0.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake_waiters()
        with _registry_lock:
            if self._bind:
                if _bound.get(self._name) is self:
                    del _bound[self._name]
            else:
                waiting = _waiting.get(self._name)
                if waiting is not None and self in waiting:
                    waiting.remove(self)
                    if not waiting:
                        del _waiting[self._name]
            self._detach_all()
        with self._lock:
            self._inbox.clear()
            self._wakeup.close()


class MemoryParentEnd(_MemoryEnd, ParentEnd):
    """The parent (DEALER-like) end of a memory link."""

    _is_parent = True

    def __init__(self, name: str, *, bind: bool, sndhwm: int, rcvhwm: int, max_message_size: int) -> None:
        ParentEnd.__init__(self)
        self._link: _Link | None = None
        self._blocked_sender: MemoryChildEnd | None = None
        self._setup(name, bind, sndhwm, rcvhwm, max_message_size)

    def _accepts_link(self) -> bool:
        return self._link is None

    def send_nowait(self, payload: Payload) -> bool:
        if self._closed:
            raise self._closed_error()
        if type(payload) is not bytes:
            payload = bytes(payload)
        link = self._link
        child = None if link is None else link.child
        if link is None or child is None:
            return self._refused(lambda: self._link is link and (link is None or link.child is None))
        if self._too_big(payload, child):
            return True
        with child._lock:
            if link.to_child < link.cap_to_child and not child._closed:
                link.to_child += 1
                child._inbox.append((link, payload))
                if not child._signalled:
                    child._signalled = True
                    child._wakeup.ring()
                return True
            link.parent_blocked = True
        return self._refused(lambda: link.parent_blocked)

    def recv_nowait(self) -> bytes | None:
        with self._lock:
            payload = self._pop_locked()
            if payload is None:
                return None
            waker = self._blocked_sender
            if waker is None:
                return payload
            self._blocked_sender = None
        waker._notify()
        return payload

    def _detach_all(self) -> None:
        link = self._link
        if link is None:
            return
        self._link = None
        link.parent = None
        child = link.child
        if child is not None:
            child._drop_link(link)


class MemoryChildEnd(_MemoryEnd, ChildEnd):
    """The child (ROUTER-like) end of a memory link: any number of parents."""

    _is_parent = False

    def __init__(self, name: str, *, bind: bool, sndhwm: int, rcvhwm: int, max_message_size: int) -> None:
        ChildEnd.__init__(self)
        self._links: dict[bytes, _Link] = {}
        self._peers: set[bytes] = set()
        self._setup(name, bind, sndhwm, rcvhwm, max_message_size)

    def _accepts_link(self) -> bool:
        return True

    def send_nowait(self, peer: bytes, payload: Payload) -> bool:
        if self._closed:
            raise self._closed_error()
        link = self._links.get(peer)
        parent = None if link is None else link.parent
        if link is None or parent is None:
            raise TransportError(f"{self.endpoint}: unknown peer {peer!r}")
        if type(payload) is not bytes:
            payload = bytes(payload)
        if self._too_big(payload, parent):
            return True
        with parent._lock:
            if parent._link is not link or parent._closed:
                raise TransportError(f"{self.endpoint}: unknown peer {peer!r}")
            if len(parent._inbox) < link.cap_to_parent:
                parent._inbox.append(payload)
                if not parent._signalled:
                    parent._signalled = True
                    parent._wakeup.ring()
                return True
            parent._blocked_sender = self
        return self._refused(lambda: parent._blocked_sender is self)

    def recv_nowait(self) -> "tuple[bytes, bytes] | None":
        with self._lock:
            item = self._pop_locked()
            if item is None:
                return None
            link, payload = item
            link.to_child -= 1
            if not link.heard:
                link.heard = True
                if link.parent is not None:
                    self._peers.add(link.identity)
            waker = None
            if link.parent_blocked:
                link.parent_blocked = False
                waker = link.parent
        if waker is not None:
            waker._notify()
        return link.identity, payload

    @property
    def peers(self) -> "frozenset[bytes]":
        with self._lock:
            return frozenset(self._peers)

    def _drop_link(self, link: _Link) -> None:
        """The parent of ``link`` closed (called with _registry_lock held)."""
        with self._lock:
            self._links.pop(link.identity, None)
            self._peers.discard(link.identity)
        self._notify()
        if not self._links:
            self._wait_for_rebind()

    def _detach_all(self) -> None:
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            link.child = None
            parent = link.parent
            if parent is not None:
                parent._link = None
                parent._notify()
                parent._wait_for_rebind()
