"""``streak``: keep the tokens most likely to be selected again, predicted from their past.

A token's streak is the number of consecutive decode steps its layer has selected it, up to its
latest read (it restarts at 1 after a gap). Cached tokens are ranked by streak (ties: the least
recently read is the weakest); when a layer has been read at a step, its cached tokens that step
did not select drop to streak 0 (they are the first to go). A missed token is cached while there
is room; when the cache is full it replaces the weakest cached token only if its own streak is
higher, and is otherwise not cached. Past only: the streak of a token is known when it is read.

Why: between two reads of a token, (layers - 1) x k other tokens pass, a cyclic sweep that
defeats LRU below one step's footprint. Keeping a stable set of tokens that have been re-selected
step after step, and refusing newcomers that are less likely to be, turns that sweep into hits.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.heap import NONE, heap_compact, heap_pop, heap_push, heap_top
from harness.policies.base import Policy

SEQ = 1 << 40


class Streak(Policy):
    name = "streak"
    description = "predictive: keep tokens re-selected in the most consecutive steps, admit only stronger ones"

    def fa_hits(self, reads, capacity):
        d = reads.id_space
        cap = 4 * capacity + 64
        return _streak(reads.tid, reads.layer, reads.step, capacity, reads.layers,
                       np.full(d, NONE, np.int64), np.full(d, -1, np.int64), np.zeros(d, np.int64),
                       np.zeros(d, np.int64), np.full(d, -1, np.int64), np.full(d, -1, np.int64),
                       np.zeros(d, np.int32), np.empty(cap, np.int64), np.empty(cap, np.int32))


@nb.njit(cache=True)
def _streak(tid, layer, step, capacity, layers, cur, last_step, streak, last_read, prev, nxt, tok_layer, hk, hi):
    head = np.full(layers, -1, np.int64)  # cached tokens of each layer, linked (for demotion)
    n, size, hits = 0, 0, 0
    group_step, group_layer = -1, -1
    for i in range(tid.shape[0]):
        x, l, s = tid[i], layer[i], step[i]
        if s != group_step or l != group_layer:
            if group_layer >= 0:  # the finished layer-step: cached tokens it did not select drop to 0
                y = head[group_layer]
                while y >= 0:
                    if last_step[y] < group_step and cur[y] >= SEQ:
                        cur[y] = last_read[y]
                        if n == hk.shape[0]:
                            n = heap_compact(hk, hi, n, cur)
                        n = heap_push(hk, hi, n, cur[y], y)
                    y = nxt[y]
            group_step, group_layer = s, l
        streak[x] = streak[x] + 1 if last_step[x] == s - 1 else 1
        last_step[x] = s
        last_read[x] = i
        key = streak[x] * SEQ + i
        if cur[x] != NONE:
            hits += 1
        else:
            if size == capacity:
                n = heap_top(hk, hi, n, cur)
                if streak[x] <= hk[0] // SEQ:
                    continue  # weaker than everything cached: not admitted
                v = hi[0]
                cur[v] = NONE
                n = heap_pop(hk, hi, n)
                p, q = prev[v], nxt[v]  # unlink from its layer's list
                if p >= 0:
                    nxt[p] = q
                else:
                    head[tok_layer[v]] = q
                if q >= 0:
                    prev[q] = p
            else:
                size += 1
            tok_layer[x] = l
            prev[x] = -1  # link into its layer's list
            nxt[x] = head[l]
            if head[l] >= 0:
                prev[head[l]] = x
            head[l] = x
        cur[x] = key
        if n == hk.shape[0]:
            n = heap_compact(hk, hi, n, cur)
        n = heap_push(hk, hi, n, key, x)
    return hits
