"""``bip``: LRU with bimodal insertion (BIP) at token granularity.

Hits move a token to the most recent end, as LRU. A missed token is inserted at the least
recent end (it is the next victim unless it is hit before the next miss), except every 32nd
insertion (``mru_every``, counted), which goes to the most recent end. Like BRRIP this lets a
cyclic sweep pass without displacing the tokens that stay."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness import dlist
from harness.policies.base import Policy, check_int


class BIP(Policy):
    name = "bip"
    description = "LRU with bimodal insertion: new tokens at the LRU end, every 32nd at the MRU end"
    defaults = {"mru_every": 32}

    def check(self, reads, capacity):
        super().check(reads, capacity)
        check_int(self.name, "mru_every", self.params["mru_every"], 1)

    def fa_hits(self, reads, capacity):
        d = reads.id_space
        return _bip(reads.tid, capacity, np.full(d, -1, np.int64), np.full(d, -1, np.int64),
                    np.zeros(d, np.uint8), int(self.params["mru_every"]))


@nb.njit(cache=True)
def _bip(tid, capacity, prev, nxt, inside, mru_every):
    ends = np.full((1, 2), -1, np.int64)  # head = most recent
    size, hits, inserts = 0, 0, 0
    for i in range(tid.shape[0]):
        t = tid[i]
        if inside[t]:
            hits += 1
            dlist.unlink(t, prev, nxt, ends, 0)
            dlist.push_head(t, prev, nxt, ends, 0)
            continue
        if size == capacity:
            inside[dlist.pop_tail(prev, nxt, ends, 0)] = 0
        else:
            size += 1
        inside[t] = 1
        inserts += 1
        if inserts % mru_every == 0:
            dlist.push_head(t, prev, nxt, ends, 0)
        else:
            dlist.push_tail(t, prev, nxt, ends, 0)
    return hits
