"""One process at a time in a directory: a lock across processes that the kernel drops
when its holder dies, however it dies, so that a killed process never blocks the next.

Framework-neutral: PyTorch's native loop builds under it (``multirnn_torch.native``)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger("multirnn.lock")


class BuildLockTimeout(RuntimeError):
    """Another process held the lock for longer than the caller would wait."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # POSIX only: signal 0 checks, sends nothing
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class BuildLock:
    """One build at a time in a build directory, across processes.

    An operating-system lock on ``multirnn.lock`` (``fcntl.flock``; ``msvcrt.locking`` on
    Windows): the kernel drops it when the holding process exits or is killed, so a lock is
    never left behind. Where the file system refuses such locks (some network file
    systems), an exclusively created ``multirnn.pid`` naming the holder's pid and host
    stands in; one naming a process of this host that no longer runs is taken over. The
    file says who holds the lock, for the timeout's message.
    """

    POLL = (0.05, 1.0)  # first and longest pause between tries, in seconds

    def __init__(self, directory: Path, timeout: float, what: str = "the lock", limit: str = ""):
        self.what = what
        self.limit = f" ({limit})" if limit else ""  # what sets the timeout, for the message
        self.path = directory / "multirnn.lock"
        self.pid_path = directory / "multirnn.pid"
        self.timeout = timeout
        self.fd: int | None = None
        self.pid_file = False

    def __enter__(self) -> BuildLock:
        me = f"{os.getpid()} {socket.gethostname()}"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(me)
        except BaseException:  # the timeout, Ctrl-C while waiting
            self._close()
            raise
        return self

    def _acquire(self, me: str) -> None:
        start = time.monotonic()
        pause = self.POLL[0]
        while not self._try(me):
            waited = time.monotonic() - start
            if waited >= self.timeout:
                raise BuildLockTimeout(
                    f"another process ({self._holder()}) held {self.what} {self.path} for more "
                    f"than {self.timeout:g} s{self.limit}; it may still be working"
                )
            if pause == self.POLL[0]:
                log.info("waiting for %s %s (%s)", self.what, self.path,
                         self._holder())  # fmt: skip
            time.sleep(min(pause, self.timeout - waited))
            pause = min(2 * pause, self.POLL[1])
        if not self.pid_file:  # who holds it, for a waiting process's message
            os.lseek(self.fd, 0, os.SEEK_SET)
            os.write(self.fd, me.encode().ljust(64))

    def _try(self, me: str) -> bool:
        if self.pid_file:
            return self._try_pid_file(me)
        try:
            if os.name == "nt":
                import msvcrt

                os.lseek(self.fd, 0, os.SEEK_SET)
                msvcrt.locking(self.fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if os.name == "nt" or exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return False  # held by another process
            log.info("no file lock on %s (%s); using a pid file", self.path, exc)
            self.pid_file = True
            return self._try_pid_file(me)

    def _try_pid_file(self, me: str) -> bool:
        try:
            fd = os.open(self.pid_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = self._holder()
            if self._ended(holder):
                self._claim_stale(holder)
            return False
        with os.fdopen(fd, "w") as stream:
            stream.write(me)
        return True

    def _holder(self, path: Path | None = None) -> str:
        """The holder as its lock file names it: 'PID on HOST'."""
        path = path or (self.pid_path if self.pid_file else self.path)
        try:
            text = path.read_text().split()
        except (OSError, UnicodeDecodeError):
            text = []
        return f"{text[0]} on {text[1]}" if len(text) == 2 else "unknown"

    @staticmethod
    def _ended(holder: str) -> bool:
        """Whether ``holder`` names a process of this host that no longer runs."""
        pid, _, host = holder.partition(" on ")
        return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))

    def _claim_stale(self, holder: str) -> None:
        """Remove a pid file left by ``holder``, which has ended. Two waiters may both find
        it stale: each renames the file to a name of its own first, so only one of them
        gets it, and a file that meanwhile became someone else's is put back."""
        claimed = self.pid_path.with_name(
            f"{self.pid_path.name}.{os.getpid()}.{os.urandom(4).hex()}"
        )
        try:
            os.rename(self.pid_path, claimed)
        except OSError:  # another waiter claimed it first
            return
        if self._ended(self._holder(claimed)):
            log.info("taking over the build lock of %s, which has ended", holder)
        else:  # a new holder's file, created since we read the old one: give it back
            with contextlib.suppress(OSError):
                os.link(claimed, self.pid_path)  # unless yet another holder took the name
        claimed.unlink(missing_ok=True)

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # also drops an flock
            self.fd = None

    def __exit__(self, *exc) -> None:
        if self.pid_file:
            self.pid_path.unlink(missing_ok=True)
        elif os.name == "nt":
            import msvcrt

            os.lseek(self.fd, 0, os.SEEK_SET)
            msvcrt.locking(self.fd, msvcrt.LK_UNLCK, 1)
        self._close()
