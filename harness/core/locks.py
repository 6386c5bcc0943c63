"""An exclusive lock held through a file (``fcntl.flock``): released when its holder exits,
however it exits, so a killed process never leaves a held lock behind.

The lock file exists only while the lock is held: the holder deletes it when it releases the
lock, so a finished, failed or interrupted command leaves no ``.lock`` in the user's folder
(a process killed outright, SIGKILL, leaves the file, which holds no lock and is reused). Deleting
a lock file races with a process that opened it and waits for it: that one then holds a lock on a
file no longer in the folder, while a third process could lock a new file of the same name. So a
process that gets the lock checks that the file it locked is still the one at the path, and tries
again when it is not.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


class FileLock:
    """``with FileLock(path, wait):`` holds an exclusive lock on ``path`` (created if missing,
    deleted on release). Without ``wait`` a held lock raises :class:`LockHeld` (naming the
    holder) at once."""

    def __init__(self, path: str | os.PathLike, wait: bool = True):
        self.path, self.wait = Path(path), wait
        self._fd: int | None = None

    def __enter__(self):
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise LockHeld(holder) from None
            except BaseException:
                os.close(fd)
                raise
            if self._is_at_path(fd):
                break
            os.close(fd)  # the holder before us deleted it on release: lock the file there now
        self._fd = fd
        try:  # who holds it, for the message of a process that finds it held
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}".encode(), 0)
        except BaseException:  # a full disk: release, leaving nothing
            self._release()
            raise
        return self

    def _is_at_path(self, fd: int) -> bool:
        try:
            here, locked = os.stat(self.path), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino)

    def _release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # still ours (we hold the lock): nobody else deletes it
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __exit__(self, *exc):
        self._release()


class LockHeld(Exception):
    """The lock is held by someone else (the message names the holder)."""
