"""``lfu``: token LFU with dynamic aging (LFU-DA).

Each cached token has a key ``K = L + count``, where ``count`` is its reads since it was last
inserted and ``L`` the cache's age: a hit increments ``count`` and sets ``K = L + count``, an
inserted token gets ``count = 1, K = L + 1``. The victim is the token with the smallest K (ties:
the least recently read); on each eviction ``L`` becomes the victim's K. Aging lets tokens that
were popular long ago fall out once newer tokens catch up. Tokens sit in one list per key, so
every step is O(1) (amortised)."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist
from harness.cache.policies.base import Policy


class LFU(Policy):
    name = "lfu"
    description = "LFU with dynamic aging: evict the smallest (age + reads since insertion)"

    def fa_hits(self, reads, capacity):
        d = reads.id_space
        return _lfu(reads.tid, capacity, np.full(d, -1, np.int64), np.full(d, -1, np.int64),
                    np.zeros(d, np.int64), np.zeros(d, np.int64),
                    np.full((len(reads) + 2, 2), -1, np.int64))


@nb.njit(cache=True)
def _lfu(tid, capacity, prev, nxt, key, count, buckets):
    # buckets[K] lists the cached tokens with key K, newest first. Keys never drop below the
    # smallest live key (new keys are age + 1 >= it, hits raise keys), so the minimum is found by
    # a pointer that only moves up.
    size, hits, age, low = 0, 0, 0, 0
    for i in range(tid.shape[0]):
        x = tid[i]
        if key[x] > 0:
            hits += 1
            k = key[x]
            buckets[k, 0], buckets[k, 1] = dlist.unlink(x, prev, nxt, buckets[k, 0], buckets[k, 1])
            count[x] += 1
        else:
            if size == capacity:
                while buckets[low, 1] < 0:
                    low += 1
                age = low
                v, buckets[low, 0], buckets[low, 1] = dlist.pop_tail(prev, nxt, buckets[low, 0], buckets[low, 1])
                key[v] = 0
            else:
                size += 1
            count[x] = 1
        k = age + count[x]
        key[x] = k
        buckets[k, 0], buckets[k, 1] = dlist.push_head(x, prev, nxt, buckets[k, 0], buckets[k, 1])
    return hits
