"""``token-lru``: least recently used whole token.

A read of a cached token is a hit and makes it the most recent; a missed token is inserted,
evicting the least recently read token when the cache is full. In the LLC's reserved ways the
same recency is kept per token across its lines (see ``harness.cache.llc``).

Hardware cost: besides the record bookkeeping every token policy has (``HardwareCost``: a tag per
record, a record index per reserved line), a recency rank per record, ceil(log2 T) bits for the
exact order of up to T resident tokens (``HardwareReference.rank_bits``)."""

from __future__ import annotations

import numpy as np

from harness.cache.policies.base import REFERENCE, HardwareCost, Policy
from harness.cache.tokencache import lru_chunk


class TokenLRU(Policy):
    name = "token-lru"
    description = "least recently read token is evicted (recency per token)"

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost.token_policy(ref.rank_bits, ref)

    def fa_hits(self, reads, capacity):
        d = reads.id_space
        prev, nxt = np.full(d, -1, np.int64), np.full(d, -1, np.int64)
        state = np.array([0, 0, -1, -1], dtype=np.int64)
        lru_chunk(reads.tid, capacity, prev, nxt, np.zeros(d, np.uint8), state)
        return int(state[1])
