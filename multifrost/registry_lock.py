"""The registry's two write locks, taken and released so that nothing is left behind.

The file lock ``services.lock`` is created with ``O_CREAT|O_EXCL`` and holds its owner's pid
(the Python, Go and Rust peers use it); the directory lock ``services.json.lock`` is made with
``mkdir`` (the JavaScript peer's). A lock whose owner pid is not running is broken at once; any
lock older than ``stale_after`` seconds (a hung holder, or a lock without a readable pid) is
broken too.

A Ctrl-C can never cut a lock's creation from its bookkeeping, or its release in two: those few
statements run with SIGINT held, and the held signal is delivered right after them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

from .errors import RegistryError

logger = logging.getLogger("multifrost.registry")

Identity = tuple[int, int]  # (inode, mtime in ns): tells our lock from one that replaced it


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


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Run the body with Ctrl-C held back, then deliver it (Python handlers only run in the
    main thread, so elsewhere, or when SIGINT has no Python handler, there is nothing to hold)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    caught = []
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            previous(signal.SIGINT, caught[0])


@contextlib.contextmanager
def hold_locks(file_lock: Path, dir_lock: Path, registry: Path, timeout: float,
               stale_after: float) -> Iterator[None]:
    """Hold the file lock, then the directory lock, for the body; RegistryError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    held: dict[Path, Identity] = {}
    try:
        for path, is_dir in ((file_lock, False), (dir_lock, True)):
            while True:
                with sigint_held():  # created and noted as ours, or neither
                    identity = _try_lock(path, is_dir, stale_after)
                    if identity is not None:
                        held[path] = identity
                if identity is not None:
                    break
                if time.monotonic() >= deadline:
                    owner = _owner(path)
                    raise RegistryError(
                        f"could not lock service registry {registry} within {timeout:g} s: {path} is held by "
                        f"{f'pid {owner}' if owner else 'another process'}; if no process is writing the "
                        f"registry, delete the lock")
                time.sleep(random.uniform(0.001, 0.01))
        yield
    finally:
        with sigint_held():
            for path, identity in reversed(held.items()):
                _unlock(path, identity, is_dir=path == dir_lock)


def _try_lock(path: Path, is_dir: bool, stale_after: float) -> Identity | None:
    """Take one lock; return its identity, or None when another holds it (breaking it if stale)."""
    try:
        if is_dir:
            os.mkdir(path)
        else:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        _break_if_stale(path, is_dir, stale_after)
        return None
    except OSError as exc:
        raise RegistryError(f"cannot create registry lock {path}: {exc.strerror or exc}") from exc
    try:
        if not is_dir:
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        st = os.stat(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            _remove(path, is_dir=is_dir)
        raise RegistryError(f"cannot write registry lock {path}: {exc.strerror or exc}") from exc
    return st.st_ino, st.st_mtime_ns


def _unlock(path: Path, identity: Identity, *, is_dir: bool) -> None:
    """Release a lock, unless it is no longer ours (broken as stale and taken by another)."""
    try:
        st = os.stat(path)
        if (st.st_ino, st.st_mtime_ns) != identity:
            logger.warning("registry lock %s was taken over while held; leaving it", path)
            return
        _remove(path, is_dir=is_dir)
    except FileNotFoundError:
        logger.warning("registry lock %s vanished while held", path)
    except OSError as exc:
        logger.warning("cannot release registry lock %s: %s", path, exc)


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
    if owner is not None and not pid_alive(owner):
        return f"its owner, pid {owner}, is not running"
    age = time.time() - st.st_mtime
    if age > stale_after:
        return f"{age:.0f} s old"
    return None


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
        logger.warning("cannot remove stale registry lock %s: %s", path, exc)
        return
    try:
        moved = os.stat(aside)
        if (moved.st_ino, moved.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
            _put_back(aside, path, is_dir=is_dir)
            return
        logger.warning("removing stale registry lock %s (%s)", path, why)
        _remove(aside, is_dir=is_dir)
    except OSError as exc:
        logger.warning("cannot remove stale registry lock %s: %s", aside, exc)


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
