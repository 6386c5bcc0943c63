"""``bip``: LRU with bimodal insertion (BIP) at token granularity.

Hits move a token to the most recent end, as LRU. A missed token is inserted at the least
recent end (it is the next victim unless it is hit before the next miss), except every 32nd
insertion (``mru_every``, counted), which goes to the most recent end. Like BRRIP this lets a
cyclic sweep pass without displacing the tokens that stay (Qureshi et al., "Adaptive
Insertion Policies for High Performance Caching", ISCA 2007: BIP with epsilon = 1/32).

Hardware cost: per record a recency rank (ceil(log2 T) bits; an insertion at the LRU end is the
lowest rank), one global counter of insertions modulo 32 (5 bits), and the record bookkeeping of
every token policy (``HardwareCost``)."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist
from harness.cache.policies.base import REFERENCE, HardwareCost, Policy, check_int
from harness.cache.policies.ways import F_KEY, ReservedWays

# Bimodal insertion (BIP, and BRRIP's 'long' prediction): every 32nd inserted token is treated as
# likely to be reused; the FA policies and the LLC's reserved ways use the same.
BIMODAL_EVERY = 32
G_INSERTS, G_LOW = 0, 1  # the reserved ways' inserted tokens and LRU end's key (global registers)


@nb.njit(inline="always")
def _touch(rec, records, g, now, new_read):
    if new_read:
        records[rec, F_KEY] = now


@nb.njit(inline="always")
def _insert(rec, tok, records, g, hkeys, hvals, layer_ends, now):
    g[G_INSERTS] += 1
    if g[G_INSERTS] % BIMODAL_EVERY == 0:
        records[rec, F_KEY] = now
    else:  # the LRU end: below every key so far, the newest lowest
        g[G_LOW] -= 1
        records[rec, F_KEY] = g[G_LOW]


class BIP(Policy):
    name = "bip"
    description = "LRU with bimodal insertion: new tokens at the LRU end, every 32nd at the MRU end"
    defaults = {"mru_every": BIMODAL_EVERY}  # the LLC's reserved ways use the same
    reserved_ways = ReservedWays(touch=_touch, insert=_insert)

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost.token_policy(ref.rank_bits, ref, global_bits=ref.bits(BIMODAL_EVERY))

    def check(self, reads, capacity):
        super().check(reads, capacity)
        check_int(self.name, "mru_every", self.params["mru_every"], 1)

    def fa_hits(self, reads, capacity):
        d = reads.id_space
        return _bip(reads.tid, capacity, np.full(d, -1, np.int64), np.full(d, -1, np.int64),
                    np.zeros(d, np.uint8), int(self.params["mru_every"]))


@nb.njit(cache=True)
def _bip(tid, capacity, prev, nxt, inside, mru_every):
    head, tail = -1, -1  # head = most recent
    size, hits, inserts = 0, 0, 0
    for i in range(tid.shape[0]):
        t = tid[i]
        if inside[t]:
            hits += 1
            head, tail = dlist.unlink(t, prev, nxt, head, tail)
            head, tail = dlist.push_head(t, prev, nxt, head, tail)
            continue
        if size == capacity:
            victim, head, tail = dlist.pop_tail(prev, nxt, head, tail)
            inside[victim] = 0
        else:
            size += 1
        inside[t] = 1
        inserts += 1
        if inserts % mru_every == 0:
            head, tail = dlist.push_head(t, prev, nxt, head, tail)
        else:
            head, tail = dlist.push_tail(t, prev, nxt, head, tail)
    return hits
