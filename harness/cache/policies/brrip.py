"""``brrip``: token BRRIP, bimodal re-reference interval prediction.

As ``srrip``, except that a missed token is inserted with RRPV 3 ("distant": the next victim
unless it is hit first), and only every 32nd insertion (``long_every``, counted, not random) with
RRPV 2. This resists cyclic sweeps larger than the cache: most of a sweep passes through without
displacing the tokens that stay.

Hardware cost: as ``srrip``, plus one global counter of insertions modulo 32 (5 bits)."""

from __future__ import annotations

import numba as nb

from harness.cache.policies.base import REFERENCE, HardwareCost, Policy, check_int
from harness.cache.policies.bip import BIMODAL_EVERY
from harness.cache.policies.rrip import (
    G_AGING,
    SRRIP,
    age_before_eviction,
    insert_rrpv,
    rrip_hits,
    touch_rrip,
)
from harness.cache.policies.ways import ReservedWays

G_INSERTS = G_AGING + 1  # the reserved ways' count of inserted tokens (a global register after srrip's)


@nb.njit(inline="always")
def _insert(rec, tok, records, g, hkeys, hvals, layer_ends, now):
    g[G_INSERTS] += 1
    insert_rrpv(rec, records, g, now, 2 if g[G_INSERTS] % BIMODAL_EVERY == 0 else 3)


class BRRIP(Policy):
    name = "brrip"
    description = "token BRRIP: new tokens inserted 'distant' (RRPV 3), every 32nd 'long' (RRPV 2)"
    defaults = {"long_every": BIMODAL_EVERY}  # the LLC's reserved ways use the same
    reserved_ways = ReservedWays(touch=touch_rrip, insert=_insert, before_eviction=age_before_eviction)

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost.token_policy(SRRIP.RRPV_BITS + ref.rank_bits, ref,
                                         global_bits=ref.bits(BIMODAL_EVERY))

    def check(self, reads, capacity):
        super().check(reads, capacity)
        check_int(self.name, "long_every", self.params["long_every"], 1)

    def fa_hits(self, reads, capacity):
        return rrip_hits(reads.tid, capacity, reads.id_space, int(self.params["long_every"]))
