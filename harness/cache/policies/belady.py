"""``min``: Belady's MIN at token granularity, the offline optimum (a bound, not a policy).

On a miss with the cache full, the cached token whose next read lies furthest in the future is
evicted, unless the missed token's own next read lies further still: then it is not inserted
(bypass). With bypass allowed this maximises hits over every policy that caches whole tokens.
It reads the future of the stream; the real policies may only use its past."""

from __future__ import annotations

import numpy as np

from harness.cache.policies.base import Policy
from harness.cache.tokencache import NO_MASK, min_chunk, min_state


class Belady(Policy):
    name = "min"
    description = "Belady's MIN with bypass: the offline optimum (uses the future; a bound)"
    offline = True

    def fa_hits(self, reads, capacity):
        return self._run(reads, capacity, NO_MASK)

    def fa_hit_mask(self, reads, capacity):
        hit = np.zeros(len(reads), np.uint8)
        self._run(reads, capacity, hit)
        return hit

    @staticmethod
    def _run(reads, capacity, hit) -> int:
        state = np.zeros(3, dtype=np.int64)
        min_chunk(reads.tid, reads.next_use, capacity, *min_state(reads.id_space, capacity), state, hit)
        return int(state[2])
