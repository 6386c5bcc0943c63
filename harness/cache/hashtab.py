"""A tiny open-addressing hash table for numba kernels: int64 keys, rows of int64 values.

``keys[i] == EMPTY`` marks a free slot; probing is linear and deletion shifts later entries back
(no tombstones), so a table that stays under half full never degrades. Values live in a 2-D
array whose rows move together with their keys.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.core import numba_cache

numba_cache.guard()  # a broken cache file of a kernel: compiled again, not a crash

EMPTY = np.iinfo(np.int64).min  # the one int64 that cannot be a key


def new_table(min_entries: int, fields: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys and values for at least ``min_entries`` live entries at load factor <= 1/2."""
    size = 1 << max(4, int(2 * max(1, min_entries) - 1).bit_length())
    return np.full(size, EMPTY, dtype=np.int64), np.zeros((size, fields), dtype=np.int64)


@nb.njit(inline="always")
def _home(key, mask):
    x = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64(x >> np.uint64(33)) & mask


@nb.njit(inline="always")
def find(keys, key):
    """Index of ``key`` or -1."""
    mask = keys.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = keys[i]
        if k == key:
            return i
        if k == EMPTY:
            return -1
        i = (i + 1) & mask


@nb.njit(inline="always")
def insert(keys, vals, key):
    """Index of a new zeroed entry for ``key`` (which must be absent and the table not full)."""
    mask = keys.shape[0] - 1
    i = _home(key, mask)
    while keys[i] != EMPTY:
        i = (i + 1) & mask
    keys[i] = key
    vals[i, :] = 0
    return i


@nb.njit(inline="always")
def delete(keys, vals, i):
    """Remove entry ``i``; later entries of its probe run shift back (indices change)."""
    mask = keys.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = keys[j]
        if k == EMPTY:
            break
        home = _home(k, mask)
        # entry j may move to the hole at i if its home is not cyclically in (i, j]
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            keys[i] = k
            vals[i, :] = vals[j, :]
            i = j
    keys[i] = EMPTY


def grow(keys: np.ndarray, vals: np.ndarray, min_entries: int) -> tuple[np.ndarray, np.ndarray]:
    """A larger table holding the entries of ``keys``/``vals``, with room for ``min_entries``."""
    new_keys, new_vals = new_table(min_entries, vals.shape[1])
    _rehash(keys, vals, new_keys, new_vals)
    return new_keys, new_vals


@nb.njit(cache=True)
def _rehash(keys, vals, new_keys, new_vals):
    for i in range(keys.shape[0]):
        if keys[i] != EMPTY:
            e = insert(new_keys, new_vals, keys[i])
            new_vals[e, :] = vals[i, :]
