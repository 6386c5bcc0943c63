"""``pin-recent``: pin attention sinks and a window of the most recent tokens, LRU for the rest.

A token of position p in a layer whose current context is c is pinned while p < ``sinks`` or
p >= c - ``window`` (DSA picks recent tokens and sinks often). The victim is the least recently
read unpinned token; only when every cached token is pinned does the least recently read
pinned token go. A token that slides out of the window becomes an ordinary LRU token with the
recency of its last read. The pinned set of every layer and request must fit in the capacity.
By default the pinned sets fill up to half of it: ``sinks`` = min(4, that budget per layer and
request) and ``window`` the rest of the budget."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.errors import UserError
from harness.heap import NONE, heap_compact, heap_pop, heap_push, heap_top
from harness.policies.base import Policy, check_int

PINNED = 1 << 62


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
        cap = 4 * capacity + 64
        return _pin(reads.tid, reads.layer, reads.request, reads.pos, reads.ctx, capacity, reads.layers,
                    reads.width, *self._pins(reads, capacity),
                    np.full(d, NONE, np.int64), np.zeros(d, np.int64),
                    np.zeros(reads.requests * reads.layers, np.int64),
                    np.empty(cap, np.int64), np.empty(cap, np.int32))


@nb.njit(cache=True)
def _pin(tid, layer, request, pos, ctx, capacity, layers, width, sinks, window, cur, last, cur_ctx, hk, hi):
    n, size, hits = 0, 0, 0
    for i in range(tid.shape[0]):
        x = tid[i]
        rl = request[i] * layers + layer[i]
        c = ctx[i]
        if c > cur_ctx[rl]:  # the window slid: its oldest positions are ordinary tokens now
            for p in range(max(sinks, cur_ctx[rl] - window), c - window):
                y = rl * width + p
                if p >= 0 and cur[y] != NONE and cur[y] >= PINNED:
                    cur[y] = last[y]
                    if n == hk.shape[0]:
                        n = heap_compact(hk, hi, n, cur)
                    n = heap_push(hk, hi, n, cur[y], y)
            cur_ctx[rl] = c
        p = pos[i]
        key = i + (PINNED if (p < sinks or p >= c - window) else 0)
        last[x] = i
        if cur[x] != NONE:
            hits += 1
        elif size == capacity:
            n = heap_top(hk, hi, n, cur)
            cur[hi[0]] = NONE
            n = heap_pop(hk, hi, n)
        else:
            size += 1
        cur[x] = key
        if n == hk.shape[0]:
            n = heap_compact(hk, hi, n, cur)
        n = heap_push(hk, hi, n, key, x)
    return hits
