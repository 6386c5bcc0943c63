"""``srrip``: token SRRIP, static re-reference interval prediction with 2-bit RRPVs per token.

Every cached token has an RRPV in 0..3 (3 = re-reference predicted in the distant future). A
hit sets the token's RRPV to 0. A missed token is inserted with RRPV 2 (a "long" prediction, so
a scan of single-use tokens cannot flush tokens that were reused). When the cache is full the
victim is a token with RRPV 3; if there is none, every RRPV is incremented until one reaches 3
(aging), then that token is evicted. Among several tokens at the largest RRPV the one whose RRPV
was set longest ago goes first. Aging is global to the (fully associative) cache and kept as an
offset, so it costs nothing per token; four lists, one per RRPV, make every step O(1).

Hardware cost: per record the 2-bit RRPV (Jaleel et al., "High Performance Cache Replacement
Using Re-Reference Interval Prediction (RRIP)", ISCA 2010: M = 2 bits per block; with the global
aging offset the live RRPVs span four values, so two bits still hold them) and, for the
oldest-first tie-break among tokens at the largest RRPV, a recency rank (ceil(log2 T) bits);
hardware SRRIP breaks ties by way index and needs only the 2 bits. Plus the record bookkeeping
of every token policy (``HardwareCost``).

In the LLC's reserved ways a token's key is (aging offset - RRPV) * SEQ + the time its RRPV was
set: the victim is the token of the largest RRPV (the smallest key), the oldest among them; the
offset is one global register, raised when the victim's RRPV is below 3."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist
from harness.cache.policies.base import REFERENCE, HardwareCost, Policy
from harness.cache.policies.ways import F_KEY, SEQ, ReservedWays

NONE = np.iinfo(np.int64).min  # level[id] of a token that is not cached
G_AGING = 0  # the reserved ways' aging offset (global register)


@nb.njit(inline="always")
def touch_rrip(rec, records, g, now, new_read):
    if new_read:
        records[rec, F_KEY] = g[G_AGING] * SEQ + now  # RRPV 0


@nb.njit(inline="always")
def insert_rrpv(rec, records, g, now, rrpv):
    records[rec, F_KEY] = (g[G_AGING] - rrpv) * SEQ + now


@nb.njit(inline="always")
def _insert(rec, tok, records, g, hkeys, hvals, layer_ends, now):
    insert_rrpv(rec, records, g, now, 2)


@nb.njit(inline="always")
def age_before_eviction(key, g):
    rrpv = g[G_AGING] - key // SEQ
    if rrpv < 3:  # nobody is at RRPV 3: age everyone until the victim is
        g[G_AGING] += 3 - rrpv


class SRRIP(Policy):
    name = "srrip"
    description = "token SRRIP: 2-bit re-reference prediction, new tokens inserted at 'long' (RRPV 2)"
    long_every = 1  # every insertion predicts "long"
    RRPV_BITS = 2
    reserved_ways = ReservedWays(touch=touch_rrip, insert=_insert, before_eviction=age_before_eviction)

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost.token_policy(cls.RRPV_BITS + ref.rank_bits, ref)

    def fa_hits(self, reads, capacity):
        return rrip_hits(reads.tid, capacity, reads.id_space, self.long_every)


def rrip_hits(tid, capacity, id_space, long_every):
    return _rrip(tid, capacity, np.full(id_space, -1, np.int64), np.full(id_space, -1, np.int64),
                 np.full(id_space, NONE, np.int64), long_every)


@nb.njit(cache=True)
def _rrip(tid, capacity, prev, nxt, level, long_every):
    # A token's level s = (aging offset when its RRPV was set) - RRPV; its RRPV now is
    # aging - s. Live levels span aging-3 .. aging, so four lists (s mod 4), each newest first,
    # hold the cache: the victim is the oldest token of the lowest non-empty level.
    ends = np.full((4, 2), -1, np.int64)
    size, hits, aging, inserts = 0, 0, 0, 0
    for i in range(tid.shape[0]):
        x = tid[i]
        if level[x] != NONE:
            hits += 1
            b = level[x] % 4
            ends[b, 0], ends[b, 1] = dlist.unlink(x, prev, nxt, ends[b, 0], ends[b, 1])
            s = aging  # RRPV 0
        else:
            inserts += 1
            rrpv = 2 if inserts % long_every == 0 else 3
            if size == capacity:
                low = aging - 3
                while ends[low % 4, 1] < 0:
                    low += 1
                if aging - low < 3:  # nobody at RRPV 3: age everyone until the victim is
                    aging += 3 - (aging - low)
                b = low % 4
                v, ends[b, 0], ends[b, 1] = dlist.pop_tail(prev, nxt, ends[b, 0], ends[b, 1])
                level[v] = NONE
            else:
                size += 1
            s = aging - rrpv
        level[x] = s
        b = s % 4
        ends[b, 0], ends[b, 1] = dlist.push_head(x, prev, nxt, ends[b, 0], ends[b, 1])
    return hits
