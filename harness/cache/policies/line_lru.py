"""``lru``: line LRU inside the reserved ways of the set-associative LLC (``harness.cache.llc``).

As a token cache it is the same as ``token-lru`` (a token is read whole, so its lines share
one recency); it is listed for the LLC, where the difference is per-line victim choice.

Hardware cost: the position of each reserved line in its set's LRU stack over the R reserved
ways, ceil(log2 R) bits per line (true LRU needs log2(R!) bits per set; R of log2 R bits is the
usual implementation: Jaleel et al., "High Performance Cache Replacement Using Re-Reference
Interval Prediction (RRIP)", ISCA 2010, Section 2). No token state."""

from __future__ import annotations

from harness.cache.policies.base import REFERENCE, HardwareCost
from harness.cache.policies.token_lru import TokenLRU
from harness.cache.policies.ways import ReservedWays


class LineLRU(TokenLRU):
    name = "lru"
    description = "least recently used line (set-associative reserved ways); as a token cache = token-lru"
    default_sweep = False  # the same hits as token-lru on the token cache
    reserved_ways = ReservedWays()  # no token hooks: the kernel's own line LRU

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost(ref.bits(ref.reserved_ways), reference=ref)
