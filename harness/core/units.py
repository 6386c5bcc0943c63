"""Parsing sizes such as ``"32MiB"`` and writing files atomically."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from harness.core.errors import UserError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``"32MiB"``, ``"512KiB"``, ``"1.5GiB"``, ``"4096"`` or an int (binary units are
    powers of two, ``kB/MB/GB`` powers of ten)."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _SIZE_UNITS:
            raise UserError(f"{what} {text!r} is not a size (use e.g. 32MiB, 512KiB or bytes)")
        scaled = float(m.group(1)) * _SIZE_UNITS[unit]
        if scaled != int(scaled):
            raise UserError(f"{what} {text!r} is not a whole number of bytes")
        value = int(scaled)
    if value <= 0:
        raise UserError(f"{what} must be positive, got {text!r}")
    return value


def format_size(nbytes: int) -> str:
    """The shortest exact binary-unit spelling: 33554432 -> '32MiB', 1000 -> '1000B'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return f"{nbytes}B"


@contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds,
    so an interrupted or failed write never leaves a half-written file (or folder). A folder
    written this way replaces an existing folder of the same name."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_dir() and final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)
