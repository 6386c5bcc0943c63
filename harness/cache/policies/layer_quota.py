"""``layer-quota``: the reservation split across layers in proportion to each layer's reuse.

Quotas are proportional to each layer's measured reuse (the share of its reads at step t whose
token it also read at step t-1, from the past of the stream only), recomputed every step, with
LRU inside each layer; see ``harness.cache.policies.quota`` for the exact rules."""

from __future__ import annotations

from harness.cache.policies.base import Policy
from harness.cache.policies.quota import PROPORTIONAL, quota_hits


class LayerQuota(Policy):
    name = "layer-quota"
    description = "per-layer quotas proportional to each layer's measured reuse, LRU inside a layer"

    def fa_hits(self, reads, capacity):
        return quota_hits(reads, capacity, PROPORTIONAL)
