"""``lfu``: token LFU with dynamic aging (LFU-DA).

Each cached token has a key ``K = L + count``, where ``count`` is its reads since it was last
inserted and ``L`` the cache's age: a hit increments ``count`` and sets ``K = L + count``, an
inserted token gets ``count = 1, K = L + 1``. The victim is the token with the smallest K (ties:
the least recently read); on each eviction ``L`` becomes the victim's K. Aging lets tokens that
were popular long ago fall out once newer tokens catch up."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.heap import NONE, heap_compact, heap_pop, heap_push, heap_top
from harness.policies.base import Policy

SEQ = 1 << 40


class LFU(Policy):
    name = "lfu"
    description = "LFU with dynamic aging: evict the smallest (age + reads since insertion)"

    def fa_hits(self, reads, capacity):
        cap = 4 * capacity + 64
        d = reads.id_space
        return _lfu(reads.tid, capacity, np.full(d, NONE, np.int64), np.zeros(d, np.int64),
                    np.empty(cap, np.int64), np.empty(cap, np.int32))


@nb.njit(cache=True)
def _lfu(tid, capacity, cur, count, hk, hi):
    n, size, hits, age = 0, 0, 0, 0
    for i in range(tid.shape[0]):
        x = tid[i]
        if cur[x] != NONE:
            hits += 1
            count[x] += 1
        else:
            if size == capacity:
                n = heap_top(hk, hi, n, cur)
                age = hk[0] // SEQ
                cur[hi[0]] = NONE
                n = heap_pop(hk, hi, n)
            else:
                size += 1
            count[x] = 1
        key = (age + count[x]) * SEQ + i
        cur[x] = key
        if n == hk.shape[0]:
            n = heap_compact(hk, hi, n, cur)
        n = heap_push(hk, hi, n, key, x)
    return hits
