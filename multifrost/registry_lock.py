"""The registry's two write locks, taken and released so that nothing is left behind.

The file lock ``services.lock`` is created with ``O_CREAT|O_EXCL`` semantics and holds its
owner's pid (the Python, Go and Rust peers use it); the directory lock ``services.json.lock`` is made with
``mkdir`` (the JavaScript peer's). A lock whose owner pid is not running is broken at once; any
lock older than ``stale_after`` seconds (a hung holder, or a lock without a readable pid) is
broken too.

A Ctrl-C (KeyboardInterrupt) may land anywhere, even between a lock's creation and the note
that it is ours, or at the very entry of ``__exit__``. So a lock is noted as being taken before
it is created, the file lock never exists without its pid, every release step can be repeated,
and what a signal still leaves behind is released when the interrupted ``with`` is freed
(a ``weakref.finalize`` attached only while locks are held: a ``__del__`` would run on every
write, and a Ctrl-C landing inside it would be swallowed), broken at once by the next writer of this process (no running frame holds it),
and, once the process is gone, by any writer (its owner is dead).
"""
from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
import weakref
from pathlib import Path
from types import FrameType

from .errors import RegistryError

log = logging.getLogger(__name__)

Identity = tuple[int, int]  # (inode, mtime in ns): tells our lock from one that replaced it
Taking = int  # the time (ns) a lock was being taken at, while its identity is not known yet
_CLOCK_SLACK_NS = 20_000_000  # file times come from a coarse clock, up to a tick behind time_ns()

_mutex = threading.RLock()  # this process's takes, releases and judgements of its own locks
_holders: dict[Path, tuple[FrameType | None, Identity]] = {}  # lock -> the frame of this process holding it


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a process we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class HeldLocks:
    """``with HeldLocks(...):`` holds the file lock, then the directory lock, for the body;
    RegistryError after ``timeout`` s. A class, not a generator: a signal landing between a
    generator's ``yield`` and the ``with`` body would leave the locks taken until the
    interrupted frame is freed; here whatever escapes ``__enter__`` releases them first.

    Each lock this process holds is noted in ``_holders`` with the frame that runs the ``with``;
    a release removes only a lock still noted as this one's, so that a late release (the finalizer)
    never removes a lock that was broken as left behind and then taken again."""

    def __init__(self, file_lock: Path, dir_lock: Path, registry: Path, timeout: float, stale_after: float) -> None:
        self._registry = registry
        self._timeout = timeout
        self._stale_after = stale_after
        self._state = _Held((file_lock, False), (dir_lock, True))
        self._finalizer: weakref.finalize | None = None

    def __enter__(self) -> None:
        state = self._state
        try:
            state.holder = sys._getframe(1)
            # Freed with locks still held (a Ctrl-C at the entry of __exit__): release them then.
            self._finalizer = weakref.finalize(self, state.release)
            deadline = time.monotonic() + self._timeout
            for path, is_dir in state.locks:
                while not state.take(path, is_dir, self._stale_after):
                    if time.monotonic() >= deadline:
                        raise self._timed_out(path)
                    time.sleep(random.uniform(0.001, 0.01))
        except BaseException:
            self._exit()
            raise

    def __exit__(self, *exc_info) -> None:
        self._exit()

    def _exit(self) -> None:
        self._state.release()
        if self._finalizer is not None:
            self._finalizer.detach()

    def _timed_out(self, path: Path) -> RegistryError:
        owner = _owner(path)
        return RegistryError(
            f"could not lock service registry {self._registry} within {self._timeout:g} s: {path} is held by "
            f"{f'pid {owner}' if owner else 'another process'}; if no process is writing the registry, "
            f"delete the lock")


class _Held:
    """The locks one ``HeldLocks`` holds and the frame holding them: apart from it, so that its
    finalizer can release them without keeping it alive."""

    __slots__ = ("locks", "held", "holder")

    def __init__(self, *locks: tuple[Path, bool]) -> None:
        self.locks = locks
        self.held: dict[Path, Identity | Taking] = {}
        self.holder: FrameType | None = None

    def take(self, path: Path, is_dir: bool, stale_after: float) -> bool:
        with _mutex:
            self.held[path] = time.time_ns() - _CLOCK_SLACK_NS  # noted before it exists
            identity = _try_lock(path, is_dir, stale_after)
            if identity is None:
                del self.held[path]
                return False
            _holders[path] = (self.holder, identity)
            self.held[path] = identity
            return True

    def release(self) -> None:
        try:
            self._unlock_all()
        finally:
            self._unlock_all()  # again, if a Ctrl-C cut the first pass short

    def _unlock_all(self) -> None:
        dir_lock = self.locks[1][0]
        while self.held:
            path, identity = next(reversed(self.held.items()))  # the directory lock first
            with _mutex:
                holder = _holders.get(path, (None,))[0]
                if holder is self.holder or (holder is None and not isinstance(identity, tuple)):
                    if isinstance(identity, tuple):
                        _unlock(path, identity, is_dir=path == dir_lock)
                    else:
                        _unlock_if_made(path, identity, is_dir=path == dir_lock)
                    _holders.pop(path, None)
                self.held.pop(path, None)


def _try_lock(path: Path, is_dir: bool, stale_after: float) -> Identity | None:
    """Take one lock; return its identity, or None when another holds it (breaking it if stale)."""
    try:
        if is_dir:
            os.mkdir(path)
        else:
            _link_file_lock(path)
        st = os.stat(path)
    except FileExistsError:
        _break_if_stale(path, is_dir, stale_after)
        return None
    except OSError as exc:
        raise RegistryError(f"cannot create registry lock {path}: {exc.strerror or exc}") from exc
    return st.st_ino, st.st_mtime_ns


def _link_file_lock(path: Path) -> None:
    """Create the file lock with this process's pid already in it: written to a file of our
    own, then linked in place (atomic, and refused like O_EXCL when the lock exists)."""
    own = path.with_name(f"{path.name}.{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(own, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
        os.link(own, path)
    finally:
        os.unlink(own)


def _unlock(path: Path, identity: Identity, *, is_dir: bool) -> None:
    """Release a lock, unless it is no longer ours (broken as stale and taken by another)."""
    try:
        st = os.stat(path)
        if (st.st_ino, st.st_mtime_ns) != identity:
            log.warning("registry lock %s was taken over while held; leaving it", path)
            return
        _remove(path, is_dir=is_dir)
    except FileNotFoundError:
        log.warning("registry lock %s vanished while held", path)
    except OSError as exc:
        log.warning("cannot release registry lock %s: %s", path, exc)


def _unlock_if_made(path: Path, since_ns: int, *, is_dir: bool) -> None:
    """A Ctrl-C cut the taking of a lock short: remove the lock if that taking made it (a file
    lock with this process's pid; a directory lock made since the taking began)."""
    try:
        if os.stat(path).st_ctime_ns >= since_ns if is_dir else _owner(path) == os.getpid():
            _remove(path, is_dir=is_dir)
    except OSError:
        pass


def _owner(path: Path) -> int | None:
    """The pid written in a file lock; None for a directory lock, an empty or unreadable one."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:  # a directory, gone, not ours to read
        return None
    return int(text) if text.isdigit() else None


def _why_stale(path: Path, st: os.stat_result, is_dir: bool, stale_after: float) -> str | None:
    """Why the lock (as ``st`` saw it) may be broken, or None while it is held."""
    owner = None if is_dir else _owner(path)
    holder, identity = _holders.get(path, (None, None))
    if holder is not None and identity == (st.st_ino, st.st_mtime_ns) and not _running(holder):
        return "this process left it behind when a Ctrl-C cut its release short"
    if holder is None and owner == os.getpid():
        return "this process left it behind when a Ctrl-C cut its taking short"
    if owner is not None and not pid_alive(owner):
        return f"its owner, pid {owner}, is not running"
    age = time.time() - st.st_mtime
    if age > stale_after:
        return f"{age:.0f} s old"
    return None


def _running(frame: FrameType | None) -> bool:
    """Whether ``frame`` is on the stack of a thread of this process (still inside its ``with``)."""
    if frame is None:
        return False
    for current in sys._current_frames().values():
        top: FrameType | None = current
        while top is not None:
            if top is frame:
                return True
            top = top.f_back
    return False


def _break_if_stale(path: Path, is_dir: bool, stale_after: float) -> None:
    """Remove a stale lock. It is first renamed aside and checked to be the one judged stale,
    so that two waiters breaking it at once cannot remove a fresh lock one of them just took."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    why = _why_stale(path, st, is_dir, stale_after)
    if why is None:
        return
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot remove stale registry lock %s: %s", path, exc)
        return
    try:
        moved = os.stat(aside)
        if (moved.st_ino, moved.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
            _put_back(aside, path, is_dir=is_dir)
            return
        log.warning("removing stale registry lock %s (%s)", path, why)
        _remove(aside, is_dir=is_dir)
        _holders.pop(path, None)
    except OSError as exc:
        log.warning("cannot remove stale registry lock %s: %s", aside, exc)


def _put_back(aside: Path, path: Path, *, is_dir: bool) -> None:
    """Return a fresh lock moved aside by mistake, unless yet another lock took its place."""
    try:
        if is_dir:
            if path.exists():
                raise FileExistsError(path)
            os.rename(aside, path)
        else:
            os.link(aside, path)
            os.unlink(aside)
    except FileExistsError:
        _remove(aside, is_dir=is_dir)


def _remove(path: Path, *, is_dir: bool) -> None:
    """Delete a lock of either kind."""
    if is_dir:
        os.rmdir(path)
    else:
        os.unlink(path)
