"""``lru``: line LRU inside the reserved ways of the set-associative LLC (``harness.cache.llc``).

As a token cache it is the same as ``token-lru`` (a token is read whole, so its lines share
one recency); it is listed for the LLC, where the difference is per-line victim choice."""

from __future__ import annotations

from harness.cache.policies.token_lru import TokenLRU


class LineLRU(TokenLRU):
    name = "lru"
    description = "least recently used line (set-associative reserved ways); as a token cache = token-lru"
