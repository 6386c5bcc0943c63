"""``lfu``: token LFU with dynamic aging (LFU-DA).

Each cached token has a key ``K = L + count``, where ``count`` is its reads since it was last
inserted and ``L`` the cache's age: a hit increments ``count`` and sets ``K = L + count``, an
inserted token gets ``count = 1, K = L + 1``. The victim is the token with the smallest K (ties:
the least recently read); on each eviction ``L`` becomes the victim's K. Aging lets tokens that
were popular long ago fall out once newer tokens catch up. Tokens sit in one list per key, so
every step is O(1) (amortised). LFU-DA as defined by Arlitt et al., "Evaluating Content
Management Techniques for Web Proxy Caches", ACM SIGMETRICS Performance Evaluation Review 27(4),
2000 (GDSF with unit cost and size).

libCacheSim's LFUDA (``lcs:lfuda``) differs in two rules, modelled and checked against it in
tests/test_zoo.py: a hit adds the current age to the key (``K = K + L``) instead of setting
``K = L + count``, so before the first eviction (L = 0) a hit only refreshes recency; and L,
set to the victim's key at an eviction, also moves up to the smallest key left above it
whenever the list of key L empties (by an eviction or by a hit). Ties go to the least recently
read token in both. With no key left above L (a cache of one token), libCacheSim's next
eviction searches an empty list and dies (SIGSEGV; a failed run in the study).

Hardware cost: per record the key, kept relative to L: every resident key lies in [L, L + D]
(a token is read at most once per decode step, so count <= D steps), so ceil(log2(D + 1)) bits
hold K - L; a recency rank for the tie-break (ceil(log2 T) bits); L itself, one global register
of as many bits; plus the record bookkeeping of every token policy (``HardwareCost``).

In the LLC's reserved ways a token's key is K * SEQ + its latest access, so ties go to the least
recently accessed token; L is one global register."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist
from harness.cache.policies.base import REFERENCE, HardwareCost, Policy
from harness.cache.policies.ways import F_KEY, F_OWN, SEQ, ReservedWays

G_AGE = 0  # the reserved ways' age L (global register)
F_READS = F_OWN  # a record's reads since its token was inserted


@nb.njit(inline="always")
def _touch(rec, records, g, now, new_read):
    if new_read:
        records[rec, F_READS] += 1  # reads, not lines, count
    records[rec, F_KEY] = (g[G_AGE] + records[rec, F_READS]) * SEQ + now


@nb.njit(inline="always")
def _insert(rec, tok, records, g, hkeys, hvals, layer_ends, now):
    records[rec, F_READS] = 1
    records[rec, F_KEY] = (g[G_AGE] + 1) * SEQ + now


@nb.njit(inline="always")
def _before_eviction(key, g):
    g[G_AGE] = key // SEQ


class LFU(Policy):
    name = "lfu"
    description = "LFU with dynamic aging: evict the smallest (age + reads since insertion)"
    reserved_ways = ReservedWays(touch=_touch, insert=_insert, before_eviction=_before_eviction)

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost.token_policy(ref.step_bits + ref.rank_bits, ref, global_bits=ref.step_bits)

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
