"""One ``unix://`` connection: cutting the byte stream into length-prefixed frames, and writing them.

A frame is a 4-byte big-endian length and that many payload bytes. Reads go into a buffer
the connection keeps (``recv_into``, many small frames per system call); a frame larger than
that buffer is read straight into the bytes object handed out (``codec.bytes_to_fill``: no
copy of a large payload on its way in). Writes go straight to the
kernel from the caller's thread (``sendmsg`` of header and payload, no joining copy for large
payloads; a payload packed as ``Pieces`` goes out part by part, its large values never copied).
Only what the kernel does not take at once (a payload larger than the socket
buffer, or a peer that stopped reading) is queued and written by a short-lived writer thread,
which ends when the queue is empty: without it, a caller that queues a large payload and then
waits for something else would wait forever.
"""
from __future__ import annotations

import itertools
import logging
import select
import socket
import threading
import time
from collections import deque
from typing import Callable

from ..codec import Pieces, bytes_to_fill

log = logging.getLogger(__name__)

BUFFER = 256 * 1024  # receive buffer per connection; larger frames get one of their own
_SOCKBUF = 4 * 1024 * 1024  # kernel buffer per direction asked for (the kernel caps it at wmem_max)
_SMALL = 16 * 1024  # payloads up to this size are joined to their header and sent in one piece
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_MAX_FRAME = 0xFFFFFFFF  # what the 4-byte length can say
_identities = itertools.count(1)
CORK_MAX = 32  # frames a connection holds back at most: the peer starts on a burst before it ends


class Connection:
    """A connected non-blocking Unix stream socket carrying frames; see the module doc."""

    __slots__ = ("sock", "fd", "identity", "endpoint", "_max", "_buf", "_view", "_start", "_stop",
                 "_body", "_body_got", "_done", "_corked", "_out", "_lock", "queued", "_writer", "_on_room", "_hwm", "_broken",
                 "emit", "short", "got")

    def __init__(self, sock: socket.socket, endpoint: str, max_size: int, hwm: int,
                 on_room: Callable[[], None]) -> None:
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKBUF)
            except OSError:
                pass
        self.sock = sock
        self.fd = sock.fileno()
        self.identity = b"\x00" + next(_identities).to_bytes(4, "big")
        self.endpoint = endpoint
        self._max = max_size
        self._hwm = hwm
        self._on_room = on_room  # called (from the writer thread) when the queue drops below hwm
        self._buf = bytearray(BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._stop = 0  # unread bytes of _buf
        self._body: memoryview | None = None  # a frame larger than _buf being received
        self._body_got = 0
        self._done: Callable[[], bytes] = _unfilled  # gives _body's frame as bytes, once full
        self._corked: list[bytes] = []  # small frames held back by write(defer=True)
        self._out: deque = deque()  # (piece, ends a message) still to write
        self._lock = threading.Lock()  # guards _out and queued while a writer runs
        self.queued = 0  # messages with bytes in _out
        self._writer: threading.Thread | None = None
        self._broken = False
        self.emit: Callable[[bytes], None] = _unclaimed  # what read() hands each frame to (set by the end)
        self.short = True
        self.got = 0

    # -- reading ---------------------------------------------------------------------------------

    def read(self) -> bool:
        """One ``recv_into``; hands every complete frame to ``emit``. False when the connection is over.

        ``short`` tells afterwards whether the kernel had less than was asked for (it was drained),
        ``got`` how many bytes came (0: none were waiting).
        """
        self.short = True
        self.got = 0
        try:
            if self._body is not None:
                room = self._body[self._body_got:]
            else:
                room = self._view[self._stop:]
            got = self.sock.recv_into(room)
            self.short = got < len(room)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            got = 0
        if not got:
            self._log_partial()
            return False
        self.got = got
        if self._body is not None:
            self._body_got += got
            if self._body_got == len(self._body):
                self._body.release()
                done, self._body, self._done = self._done, None, _unfilled
                self.emit(done())
            return True
        self._stop += got
        return self._frames(self.emit)

    def _frames(self, emit: Callable[[bytes], None]) -> bool:
        buf, view, start, stop = self._buf, self._view, self._start, self._stop
        while stop - start >= 4:
            size = int.from_bytes(buf[start:start + 4], "big")
            if size > self._max:
                log.warning("%s: the peer announced a frame of %d bytes, over max_message_size %d; "
                            "dropped its connection", self.endpoint, size, self._max)
                self._start = self._stop = 0
                return False
            end = start + 4 + size
            if end > stop:
                if 4 + size > BUFFER:  # too big for the buffer: received into bytes of its own
                    body, self._done = bytes_to_fill(size)
                    have = stop - start - 4
                    body[:have] = view[start + 4:stop]
                    self._body, self._body_got = body, have
                    start = stop
                break
            emit(bytes(view[start + 4:end]))
            start = end
        if start == stop:
            self._start = self._stop = 0
        elif stop > BUFFER // 2:  # keep room ahead: move the partial frame to the front
            buf[:stop - start] = view[start:stop]
            self._start, self._stop = 0, stop - start
        else:
            self._start = start
        return True

    def _log_partial(self) -> None:
        got = self._body_got if self._body is not None else self._stop - self._start
        if got:
            log.warning("%s: the peer hung up in the middle of a frame; dropped %d byte(s) of it",
                        self.endpoint, got)

    # -- writing ---------------------------------------------------------------------------------

    def write(self, payload: bytes | bytearray | memoryview | Pieces, defer: bool = False) -> bool:
        """Send one frame, queueing what the kernel does not take now; False when the connection broke.

        ``defer``: a small frame may wait in this process until the next ``uncork`` or write (or
        until ``CORK_MAX`` wait), so that a burst of frames leaves in one system call.
        """
        size = len(payload)
        corked = self._corked
        if size <= _SMALL and not isinstance(payload, Pieces):  # Pieces are larger (GATHER_MIN) anyway
            frame = size.to_bytes(4, "big") + payload
            if defer and self._writer is None and len(corked) < CORK_MAX:
                corked.append(frame)
                return True
            if corked:
                corked.append(frame)
                frame = b"".join(corked)
                corked.clear()
            return self._send([frame])
        if size > _MAX_FRAME:
            raise ValueError(f"{self.endpoint}: a payload of {size} bytes does not fit a frame (at most {_MAX_FRAME})")
        pieces: list = [size.to_bytes(4, "big")]
        if type(payload) is Pieces:
            pieces += payload.parts
        else:
            pieces.append(payload)
        if corked:
            pieces.insert(0, b"".join(corked))
            corked.clear()
        return self._send(pieces)

    def uncork(self) -> bool:
        """Send the frames ``write(defer=True)`` held back; False when the connection broke."""
        corked = self._corked
        if not corked:
            return True
        data = corked[0] if len(corked) == 1 else b"".join(corked)
        corked.clear()
        return self._send([data])

    def _send(self, pieces: list) -> bool:
        """Write ``pieces`` (one message's worth); the rest goes to the writer thread."""
        if self._writer is not None:  # writes are serialized by the caller, so None stays None
            with self._lock:
                if self._writer is not None:
                    self._queue(pieces, 0)
                    return True
        try:
            if len(pieces) == 1:
                sent = self.sock.send(pieces[0], _NOSIGNAL)
            else:
                sent = self.sock.sendmsg(pieces, [], _NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._broken = True
            return False
        if sent == sum(map(len, pieces)):
            return True
        self._queue(pieces, sent)
        self._writer = threading.Thread(target=self._write_queued, name="multifrost-unix-writer", daemon=True)
        self._writer.start()
        return True

    def _queue(self, pieces: list, sent: int) -> None:
        """Queue what is left of ``pieces`` after ``sent`` bytes, as one message."""
        out = self._out
        last = len(pieces) - 1
        for number, piece in enumerate(pieces):
            if sent >= len(piece) and number < last:
                sent -= len(piece)
                continue
            out.append((memoryview(piece)[sent:] if sent else piece, number == last))
            sent = 0
        self.queued += 1

    @property
    def broken(self) -> bool:
        """A write failed (the peer is gone); reading will report the end of the connection."""
        return self._broken

    def _write_queued(self) -> None:
        """Writer thread: write the queue out, waiting for room, until it is empty or the socket fails."""
        out, lock = self._out, self._lock
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while True:
            with lock:
                if not out:
                    self._writer = None
                    return
                pieces = [piece for piece, _ in itertools.islice(out, 64)]
            try:
                sent = self.sock.sendmsg(pieces, [], _NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                poller.poll()
                continue
            except OSError:  # the peer is gone, or close() shut the socket down
                with lock:
                    self._broken = True
                    out.clear()
                    self.queued = 0
                    self._writer = None
                self._on_room()
                return
            self._consume(sent)

    def _consume(self, sent: int) -> None:
        out = self._out
        with self._lock:
            before = self.queued
            while out:
                piece, last = out[0]
                if len(piece) > sent:
                    out[0] = (memoryview(piece)[sent:], last)
                    break
                sent -= len(piece)
                out.popleft()
                self.queued -= last
            room = before >= self._hwm > self.queued
        if room:
            self._on_room()

    # -- closing ---------------------------------------------------------------------------------

    def close(self, linger_until: float | None = None) -> None:
        """Close; with ``linger_until`` (a monotonic time), first let a running writer finish until then."""
        writer = self._writer
        if writer is not None:
            if linger_until is not None:
                writer.join(max(0.0, linger_until - time.monotonic()))
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the writer out of its poll
            except OSError:
                pass
            writer.join()
        self.sock.close()


def _unclaimed(payload: bytes) -> None:
    raise RuntimeError("a connection read before its end set Connection.emit")


def _unfilled() -> bytes:
    raise RuntimeError("a connection finished a large frame it had not started")
