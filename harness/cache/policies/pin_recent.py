"""``pin-recent``: pin attention sinks and a window of the most recent tokens, LRU for the rest.

A token of position p in a layer whose current context is c is pinned while p < ``sinks`` or
p >= c - ``window`` (DSA picks recent tokens and sinks often). The victim is the least recently
read unpinned token; only when every cached token is pinned does the least recently read
pinned token go. A token that slides out of the window joins the unpinned tokens as the most
recent one (two LRU lists, pinned and unpinned, keep every step O(1)). The pinned set of every layer and request must fit in the capacity.
By default the pinned sets fill up to half of it: ``sinks`` = min(4, that budget per layer and
request) and ``window`` the rest of the budget."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist
from harness.cache.policies.base import Policy, check_int
from harness.core.errors import UserError


class PinRecent(Policy):
    name = "pin-recent"
    description = "pin attention sinks and each layer's most recent tokens, LRU for the rest"
    defaults = {"sinks": None, "window": None}

    def _pins(self, reads, capacity) -> tuple[int, int]:
        budget = capacity // (2 * reads.layers * reads.requests)
        sinks = min(4, budget) if self.params["sinks"] is None else int(self.params["sinks"])
        window = max(0, budget - sinks) if self.params["window"] is None else int(self.params["window"])
        return sinks, window

    def check(self, reads, capacity):
        super().check(reads, capacity)
        for key in ("sinks", "window"):
            if self.params[key] is not None:
                check_int(self.name, key, self.params[key], 0)
        sinks, window = self._pins(reads, capacity)
        pinned = (sinks + window) * reads.layers * reads.requests
        if pinned > capacity:
            raise UserError(f"policy {self.name}: sinks + window pin {pinned:,} tokens "
                            f"({sinks} + {window} per layer and request), more than the capacity of {capacity:,}")

    def fa_hits(self, reads, capacity):
        d = reads.id_space
        return _pin(reads.tid, reads.layer, reads.request, reads.pos, reads.ctx, capacity, reads.layers,
                    reads.width, *self._pins(reads, capacity), np.full(d, -1, np.int64),
                    np.full(d, -1, np.int64), np.zeros(d, np.int8),
                    np.zeros(reads.requests * reads.layers, np.int64))


@nb.njit(cache=True)
def _pin(tid, layer, request, pos, ctx, capacity, layers, width, sinks, window, prev, nxt, where, cur_ctx):
    # where[x]: 0 not cached, 1 in the unpinned LRU list, 2 in the pinned one. The unpinned
    # list's ends stay in locals (the hot path); the pinned list's in a small array.
    uh, ut = -1, -1
    pinned_ends = np.full(2, -1, np.int64)
    size, hits = 0, 0
    for i in range(tid.shape[0]):
        x = tid[i]
        rl = request[i] * layers + layer[i]
        c = ctx[i]
        if c > cur_ctx[rl]:  # the window slid: its oldest positions are ordinary tokens now
            for p in range(max(sinks, cur_ctx[rl] - window), c - window):
                y = rl * width + p
                if p >= 0 and where[y] == 2:
                    pinned_ends[0], pinned_ends[1] = dlist.unlink(y, prev, nxt, pinned_ends[0], pinned_ends[1])
                    uh, ut = dlist.push_head(y, prev, nxt, uh, ut)
                    where[y] = 1
            cur_ctx[rl] = c
        p = pos[i]
        state = where[x]
        if state == 1:
            hits += 1
            uh, ut = dlist.unlink(x, prev, nxt, uh, ut)
        elif state == 2:
            hits += 1
            pinned_ends[0], pinned_ends[1] = dlist.unlink(x, prev, nxt, pinned_ends[0], pinned_ends[1])
        elif size == capacity:
            if ut >= 0:
                v, uh, ut = dlist.pop_tail(prev, nxt, uh, ut)
            else:
                v, pinned_ends[0], pinned_ends[1] = dlist.pop_tail(prev, nxt, pinned_ends[0], pinned_ends[1])
            where[v] = 0
        else:
            size += 1
        if p < sinks or p >= c - window:
            pinned_ends[0], pinned_ends[1] = dlist.push_head(x, prev, nxt, pinned_ends[0], pinned_ends[1])
            where[x] = 2
        else:
            uh, ut = dlist.push_head(x, prev, nxt, uh, ut)
            where[x] = 1
    return hits
