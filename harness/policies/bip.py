"""``bip``: LRU with bimodal insertion (BIP) at token granularity.

Hits move a token to the most recent end, as LRU. A missed token is inserted at the least
recent end (it is the next victim unless it is hit before the next miss), except every 32nd
insertion (``mru_every``, counted), which goes to the most recent end. Like BRRIP this lets a
cyclic sweep pass without displacing the tokens that stay."""

from __future__ import annotations

import numba as nb
import numpy as np

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
    head, tail, size, hits, inserts = -1, -1, 0, 0, 0  # head = most recent
    for i in range(tid.shape[0]):
        t = tid[i]
        if inside[t]:
            hits += 1
            if head == t:
                continue
            p, q = prev[t], nxt[t]  # unlink
            nxt[p] = q
            if q >= 0:
                prev[q] = p
            else:
                tail = p
            at_head = True
        else:
            if size == capacity:
                victim = tail
                tail = prev[victim]
                if tail >= 0:
                    nxt[tail] = -1
                else:
                    head = -1
                inside[victim] = 0
            else:
                size += 1
            inside[t] = 1
            inserts += 1
            at_head = inserts % mru_every == 0
        if at_head or head < 0:
            prev[t] = -1
            nxt[t] = head
            if head >= 0:
                prev[head] = t
            head = t
            if tail < 0:
                tail = t
        else:
            nxt[t] = -1
            prev[t] = tail
            nxt[tail] = t
            tail = t
    return hits
