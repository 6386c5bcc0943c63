"""``token-lru``: least recently used whole token.

A read of a cached token is a hit and makes it the most recent; a missed token is inserted,
evicting the least recently read token when the cache is full. In the LLC's reserved ways the
same recency is kept per token across its lines: a token's time is its latest access to any of
its lines (every line access counts, as DESIGN.md defines it), and the victim is the reserved
line whose token is least recent.

Hardware cost: besides the record bookkeeping every token policy has (``HardwareCost``: a tag per
record, a record index per reserved line), a recency rank per record, ceil(log2 T) bits for the
exact order of up to T resident tokens (``HardwareReference.rank_bits``)."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache.policies.base import REFERENCE, HardwareCost, Policy
from harness.cache.policies.ways import F_KEY, ReservedWays
from harness.cache.tokencache import NO_MASK, lru_chunk


@nb.njit(inline="always")
def touch_recent(rec, records, g, now, new_read):
    records[rec, F_KEY] = now


@nb.njit(inline="always")
def insert_recent(rec, tok, records, g, hkeys, hvals, layer_ends, now):
    records[rec, F_KEY] = now


class TokenLRU(Policy):
    name = "token-lru"
    description = "least recently read token is evicted (recency per token)"
    reserved_ways = ReservedWays(touch=touch_recent, insert=insert_recent)

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost.token_policy(ref.rank_bits, ref)

    def fa_hits(self, reads, capacity):
        return self._run(reads, capacity, NO_MASK)

    def fa_hit_mask(self, reads, capacity):
        hit = np.zeros(len(reads), np.uint8)
        self._run(reads, capacity, hit)
        return hit

    @staticmethod
    def _run(reads, capacity, hit) -> int:
        d = reads.id_space
        prev, nxt = np.full(d, -1, np.int64), np.full(d, -1, np.int64)
        state = np.array([0, 0, -1, -1], dtype=np.int64)
        lru_chunk(reads.tid, capacity, prev, nxt, np.zeros(d, np.uint8), state, hit)
        return int(state[1])
