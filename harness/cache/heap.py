"""A min-heap of (key, id) with lazy deletion for numba kernels: an entry is live iff
``cur[id] == key``; stale entries are dropped when they reach the top or on compaction."""

import numba as nb
import numpy as np


@nb.njit(inline="always")
def heap_push(hk, hi, n, key, ident):
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if hk[p] <= key:
            break
        hk[i], hi[i] = hk[p], hi[p]
        i = p
    hk[i], hi[i] = key, ident
    return n + 1


@nb.njit(inline="always")
def _sift_down(hk, hi, i, n):
    k, t = hk[i], hi[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and hk[c + 1] < hk[c]:
            c += 1
        if hk[c] >= k:
            break
        hk[i], hi[i] = hk[c], hi[c]
        i = c
    hk[i], hi[i] = k, t


@nb.njit(inline="always")
def heap_top(hk, hi, n, cur):
    """Drop stale entries; returns the new length (the live minimum is then at index 0)."""
    while n > 0 and hk[0] != cur[hi[0]]:
        n -= 1
        hk[0], hi[0] = hk[n], hi[n]
        _sift_down(hk, hi, 0, n)
    return n


@nb.njit(inline="always")
def heap_pop(hk, hi, n):
    n -= 1
    hk[0], hi[0] = hk[n], hi[n]
    _sift_down(hk, hi, 0, n)
    return n


@nb.njit(inline="always")
def heap_compact(hk, hi, n, cur):
    """Keep live entries only, re-heapified (when the arrays fill up with stale ones)."""
    m = 0
    for j in range(n):
        if hk[j] == cur[hi[j]]:
            hk[m], hi[m] = hk[j], hi[j]
            m += 1
    for j in range(m // 2 - 1, -1, -1):
        _sift_down(hk, hi, j, m)
    return m


NONE = np.iinfo(np.int64).min  # cur[id] of a token that is not cached
