"""``srrip``: token SRRIP, static re-reference interval prediction with 2-bit RRPVs per token.

Every cached token has an RRPV in 0..3 (3 = re-reference predicted in the distant future). A
hit sets the token's RRPV to 0. A missed token is inserted with RRPV 2 (a "long" prediction, so
a scan of single-use tokens cannot flush tokens that were reused). When the cache is full the
victim is a token with RRPV 3; if there is none, every RRPV is incremented until one reaches 3
(aging), then that token is evicted. Among several tokens at the largest RRPV the one whose RRPV
was set longest ago goes first. Aging is global to the (fully associative) cache and kept as an
offset, so it costs nothing per token."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.heap import NONE, heap_compact, heap_pop, heap_push, heap_top
from harness.policies.base import Policy

SEQ = 1 << 40  # key = (aging offset - RRPV) * SEQ + sequence number


class SRRIP(Policy):
    name = "srrip"
    description = "token SRRIP: 2-bit re-reference prediction, new tokens inserted at 'long' (RRPV 2)"
    long_every = 1  # every insertion predicts "long"

    def fa_hits(self, reads, capacity):
        return rrip_hits(reads.tid, capacity, reads.id_space, self.long_every)


def rrip_hits(tid, capacity, id_space, long_every):
    cap = 4 * capacity + 64
    return _rrip(tid, capacity, np.full(id_space, NONE, np.int64), np.empty(cap, np.int64),
                 np.empty(cap, np.int32), long_every)


@nb.njit(cache=True)
def _rrip(tid, capacity, cur, hk, hi, long_every):
    # cur[x] = heap key of cached token x: (A - rrpv) * SEQ + seq, so the largest effective
    # RRPV (A - key // SEQ) is the heap minimum and ties go to the oldest update
    n = 0
    size = 0
    hits = 0
    aging = 0  # A: how far every RRPV has been raised so far
    inserts = 0
    for i in range(tid.shape[0]):
        x = tid[i]
        if cur[x] != NONE:
            hits += 1
            key = aging * SEQ + i  # RRPV 0
        else:
            inserts += 1
            rrpv = 2 if inserts % long_every == 0 else 3
            if size == capacity:
                n = heap_top(hk, hi, n, cur)
                victim_rrpv = aging - (hk[0] // SEQ)
                if victim_rrpv < 3:
                    aging += 3 - victim_rrpv
                cur[hi[0]] = NONE
                n = heap_pop(hk, hi, n)
            else:
                size += 1
            key = (aging - rrpv) * SEQ + i
        cur[x] = key
        if n == hk.shape[0]:
            n = heap_compact(hk, hi, n, cur)
        n = heap_push(hk, hi, n, key, x)
    return hits
