"""Writing files and folders atomically: built under a hidden temporary name beside the final
one and renamed into place, so that a failed or killed writer leaves the previous output as it
was (harness.core.outputs says which outputs a command may replace)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_name(final: Path) -> Path:
    """A fresh hidden name beside ``final`` (``.<name>.<random>.tmp``): writers build there and
    rename; a sweep removes such names left behind by killed processes."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@contextmanager
def atomic_path(final: str | os.PathLike, check: Callable[[], object] | None = None):
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds,
    so an interrupted or failed write never leaves a half-written file (or folder). ``check`` is
    called again just before an existing ``final`` is replaced (the output rule of
    ``harness.core.outputs``: it raises if the output may no longer be replaced). A folder
    written this way replaces an existing folder of the same name: the old one is renamed
    aside first and deleted after the new one is in place. Folders made for ``final`` are
    removed again when the write fails."""
    final = Path(final)
    made = make_parents(final)
    tmp = temp_name(final)
    done = False
    try:
        yield tmp
        if check is not None and (final.exists() or final.is_symlink()):
            check()
        replace_path(tmp, final)
        done = True
    finally:
        remove_path(tmp)
        if not done:
            remove_empty(made)


def make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; returns them, deepest first."""
    made = []
    parent = path.absolute().parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    return made


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders :func:`make_parents` made, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def replace_path(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``; an existing folder ``final`` is renamed aside, then deleted."""
    if new.is_dir() and final.is_dir() and not final.is_symlink():
        old = temp_name(final)
        os.rename(final, old)
        os.rename(new, final)
        remove_path(old)
    else:
        os.replace(new, final)


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree if it exists (a temporary that is no longer needed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def sha256_file(path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
