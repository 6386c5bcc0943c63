"""Parsing sizes such as ``"32MiB"`` and writing files atomically."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

from harness.core.errors import UserError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


MAX_SIZE = (1 << 63) - 1


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``"32MiB"``, ``"512KiB"``, ``"1.5GiB"``, ``"4096"`` or an int (binary units are
    powers of two, ``kB/MB/GB`` powers of ten); positive and below 2**63."""
    if isinstance(text, bool):
        raise UserError(f"{what} {text!r} is not a size (use e.g. 32MiB, 512KiB or bytes)")
    if isinstance(text, (int, np.integer)):
        value = int(text)
    else:
        m = _SIZE_RE.match(str(text))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _SIZE_UNITS:
            raise UserError(f"{what} {text!r} is not a size (use e.g. 32MiB, 512KiB or bytes)")
        scaled = Fraction(m.group(1)) * _SIZE_UNITS[unit]
        if scaled.denominator != 1:
            raise UserError(f"{what} {text!r} is not a whole number of bytes")
        value = int(scaled)
    if value <= 0:
        raise UserError(f"{what} must be positive, got {text!r}")
    if value > MAX_SIZE:
        raise UserError(f"{what} {text!r} is too large (at most 2**63 - 1 bytes)")
    return value


def format_size(nbytes: int) -> str:
    """The shortest exact binary-unit spelling: 33554432 -> '32MiB', 1000 -> '1000B'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return f"{nbytes}B"


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else all physical
    memory); None when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(nbytes: int | float, what: str) -> None:
    """Refuse (one-line UserError), before allocating it, work that would need more than half the
    memory the machine has available: an allocation that large fails or gets the process (or a
    neighbour) killed, and no sensible input needs it."""
    available = available_memory()
    if available is not None and nbytes > available / 2:
        raise UserError(f"{what} would need {nbytes / 2**30:,.1f} GiB of memory; "
                        f"{available / 2**30:,.1f} GiB are available")


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
