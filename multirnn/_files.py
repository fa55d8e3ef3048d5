"""Opening files that come from anyone: once, by descriptor, regular files only.

A file is checked and read through the same descriptor. Checking a path and then opening
it again by name leaves a window in which someone can put a FIFO (which blocks a reader
forever) or a symlink in its place; a descriptor cannot be swapped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO opens without waiting, then is refused

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """The path names a directory, FIFO, device or socket; the message says which."""


def kind(mode: int) -> str:
    """What a file that is not a regular file is, for messages ("a FIFO (named pipe)")."""
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """A blocking read-only descriptor of the regular file at ``path``, and its status.

    Opened without waiting (a FIFO would wait for a writer), then checked with ``fstat``;
    anything but a regular file raises :class:`NotRegularFile` whose message says what it is."""
    fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, f"it is {kind(info.st_mode)}", path)
        if _NONBLOCK:
            with contextlib.suppress(ImportError):
                import fcntl

                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from the descriptor's position; fewer only at the end of the file."""
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 2**24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
