"""Sizes such as ``"32MiB"`` (parsed and spelled), and the memory a piece of work may take."""

from __future__ import annotations

import os
import re
from fractions import Fraction

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
