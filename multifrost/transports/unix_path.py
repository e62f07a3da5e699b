"""The socket file of a bound ``unix://`` end: listen at a path (replacing only a stale file),
accept, and remove the file again when the listener closes, unless another end has taken the path since."""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat

log = logging.getLogger(__name__)


class Listener:
    """A non-blocking listening Unix stream socket whose file is mode 0600."""

    def __init__(self, path: str) -> None:
        """Listen at ``path``; OSError says why not (a live listener there, not a socket, ...)."""
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            _remove_stale(path)
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(64)
            sock.setblocking(False)
            info = os.stat(path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._inode = (info.st_dev, info.st_ino)

    def accept_all(self, endpoint: str) -> list[socket.socket]:
        """The connections waiting now; after an error (logged) the rest wait in the backlog."""
        accepted = []
        while True:
            try:
                accepted.append(self.sock.accept()[0])
            except (BlockingIOError, InterruptedError):
                return accepted
            except OSError as exc:  # out of descriptors, say: the peer waits in the backlog
                log.warning("%s: cannot accept a connection: %s", endpoint, exc)
                return accepted

    def close(self) -> None:
        """Stop listening and remove the socket file if it is still the one this listener made."""
        self.sock.close()
        try:
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass


def _remove_stale(path: str) -> None:
    """Remove a socket file nothing listens on any more; refuse to replace a live one."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(errno.EEXIST, "the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # left behind by a process that is gone
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "address in use (another socket listens there)")
