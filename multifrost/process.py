"""A spawned worker process: start it, watch its exit through a file descriptor, keep the
tail of its stderr, and stop it (SIGTERM, then SIGKILL) so that nothing is left behind."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from typing import IO

from .errors import WorkerStartError

log = logging.getLogger(__name__)
output_log = logging.getLogger("multifrost.child_output")  # what a child printed, not this module's own records

TAIL_LINES = 20
_REAP_WAIT = 5.0  # seconds to wait for a SIGKILLed process to be reaped


class ChildProcess:
    """One child process in its own session (so that stopping it reaches its descendants)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None, name: str) -> None:
        self.name = name
        try:
            self._proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True)
        except OSError as exc:
            raise WorkerStartError(f"cannot start {argv[0]!r}: {exc}") from exc
        assert self._proc.stderr is not None  # stderr=PIPE
        self._stderr: IO[bytes] = self._proc.stderr
        os.set_blocking(self._stderr.fileno(), False)
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = b""
        self._exit_r, self._exit_w = self._exit_signal()

    def _exit_signal(self) -> tuple[int, int | None]:
        """A descriptor that turns readable when the process exits: a pidfd, or a pipe a thread writes."""
        if hasattr(os, "pidfd_open"):
            try:
                return os.pidfd_open(self._proc.pid), None
            except OSError:
                pass
        read_fd, write_fd = os.pipe()

        def wait() -> None:
            self._proc.wait()
            os.write(write_fd, b"x")
        threading.Thread(target=wait, name=f"multifrost-wait-{self.pid}", daemon=True).start()
        return read_fd, write_fd

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def exit_fd(self) -> int:
        return self._exit_r

    @property
    def stderr_fd(self) -> int:
        return self._stderr.fileno()

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def read_stderr(self) -> None:
        """Read what the child wrote to stderr so far: log it line by line, keep the tail."""
        try:
            data = self._stderr.read()
        except (OSError, ValueError):
            return
        if not data:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._keep(raw)

    def _keep(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self._tail.append(line)
        output_log.warning("[%s stderr] %s", self.name, line)

    def note_stderr(self, text: str) -> None:
        """Add text the child sent as STDERR messages to the tail (it is logged elsewhere)."""
        self._tail.extend(text.rstrip("\n").split("\n"))

    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr (read what is left first)."""
        self.read_stderr()
        if self._partial:
            self._keep(self._partial)
            self._partial = b""
        return "\n".join(self._tail)

    def describe_exit(self) -> str:
        code = self.returncode
        if code is None:
            return "is running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def stop(self, grace: float) -> None:
        """End the process: SIGTERM to its session, wait ``grace`` s, then SIGKILL; reap it."""
        stop_processes([self], grace)

    def terminate(self) -> None:
        """SIGTERM to the process's session; returns at once."""
        self._signal(signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to exit; True when it has."""
        try:
            self._proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self._proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Release the descriptors (after stop())."""
        self.stderr_tail()
        self._stderr.close()
        for fd in (self._exit_r, self._exit_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def stop_processes(processes: list[ChildProcess], grace: float) -> None:
    """End several processes at once: SIGTERM each session, give them ``grace`` s together,
    SIGKILL what is left (and descendants left in the sessions), reap.

    Every wait is bounded, so that this is safe from a signal handler.
    """
    running = [p for p in processes if p._proc.poll() is None]
    for process in running:
        process._signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in running:
        process.wait(max(0.0, deadline - time.monotonic()))
    for process in processes:
        process._signal(signal.SIGKILL)
    for process in running:
        if not process.wait(_REAP_WAIT):
            log.warning("process %d did not exit after SIGKILL", process.pid)
