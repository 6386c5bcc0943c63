"""An exclusive lock held through a file (``fcntl.flock``): released when its holder exits,
however it exits, so a killed process never leaves a stale lock behind."""

from __future__ import annotations

import os
import platform
from pathlib import Path


class FileLock:
    """``with FileLock(path, wait):`` holds an exclusive lock on ``path`` (created if missing).
    Without ``wait`` a held lock raises :class:`LockHeld` (naming the holder) at once."""

    def __init__(self, path: str | os.PathLike, wait: bool = True):
        self.path, self.wait = Path(path), wait
        self._file = None

    def __enter__(self):
        import fcntl

        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise LockHeld(holder) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {platform.node()}")
        self._file.flush()
        return self

    def __exit__(self, *exc):
        self._file.close()


class LockHeld(Exception):
    """The lock is held by someone else (the message names the holder)."""
