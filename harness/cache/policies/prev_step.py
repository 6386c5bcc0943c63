"""``prev-step``: keep the previous step's selections of as many layers as fit.

The layers with the highest measured reuse (past only; ties: lower layer) get a quota of one
step's selections each (k x requests tokens) while the capacity lasts, the next one the rest,
all others none (their tokens only fill free slots and go first); inside a layer LRU, so each
chosen layer holds its last step's selection. See ``harness.cache.policies.quota`` for the exact rules."""

from __future__ import annotations

from harness.cache.policies.base import Policy
from harness.cache.policies.quota import PREV_STEP, quota_hits


class PrevStep(Policy):
    name = "prev-step"
    description = "keep the last step's selections of the layers with the most reuse, as many as fit"

    def fa_hits(self, reads, capacity):
        return quota_hits(reads, capacity, PREV_STEP)
