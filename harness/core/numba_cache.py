"""numba's on-disk cache of the simulator's compiled kernels (``cache=True``), made safe to break.

numba keeps each kernel's machine code in an index file (``.nbi``) and data files (``.nbc``)
beside the source (``__pycache__``) or in ``NUMBA_CACHE_DIR``. It handles a cache of another
numba version or of changed source (it compiles again), but a truncated or garbled file (a full
disk, a killed write, a copy gone wrong) makes it raise from the first call of the kernel:
``UnpicklingError`` deep in numba, not one line that names the file. :func:`guard` makes numba
treat such a file as missing: one warning line names it, it is deleted, and the kernel is
compiled again (and cached afresh). The machine code comes from numba's own compiler either way,
never from a file that failed to load, so no wrong number can come from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.core.errors import first_line


def guard() -> None:
    """Install the guard (once per process) on numba's cache loader; call it before the first
    kernel runs (the modules that define cached kernels call it when imported)."""
    from numba.core import caching

    if getattr(caching.Cache.load_overload, "dsa_llc_guard", False):
        return
    load = caching.Cache.load_overload

    def load_overload(self, sig, target_context):
        try:
            return load(self, sig, target_context)
        except Exception as e:  # an unreadable cache file: compile again, as if it were missing
            _drop(self, e)
            return None

    load_overload.dsa_llc_guard = True
    caching.Cache.load_overload = load_overload


def _drop(cache, error: Exception) -> None:
    """Delete a kernel's cache files (its index and data files) and say so in one line."""
    files = cache._cache_file
    index = Path(files._index_path)
    for path in [index, *index.parent.glob(index.name[:-len(".nbi")] + ".*.nbc")]:
        try:
            path.unlink()
        except OSError:
            pass
    print(f"warning: numba's cache file {index} (or a data file of it) is unreadable "
          f"({type(error).__name__}: {first_line(error)}); deleted, compiling {_name(cache)} again",
          file=sys.stderr)


def _name(cache) -> str:
    func = getattr(cache, "_py_func", None)
    return f"{func.__module__}.{func.__qualname__}" if func is not None else "the kernel"
