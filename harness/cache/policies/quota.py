"""Per-layer quotas of the reservation, shared by ``layer-quota`` and ``prev-step``.

Each layer has its own LRU list of cached tokens and a quota of slots, recomputed at the first
read of every decode step from the layers' reuse measured so far: the share of a layer's reads
at step t whose token was also read at step t-1 (with one pseudo-count, so the first step
splits evenly). Quotas only decide who loses a slot: a missed token takes a free slot whenever
there is one. When the cache is full, a token of a layer below its quota evicts the LRU token of
the layer most over its quota; a token of a layer at or over its quota evicts its own layer's LRU
token, unless the quota is 0: then it is not cached. Hits move a token to the front of its
layer's list.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist

PROPORTIONAL, PREV_STEP = 0, 1


def quota_hits(reads, capacity: int, mode: int) -> int:
    d, layers = reads.id_space, reads.layers
    return _quota(reads.tid, reads.layer, reads.step, capacity, layers, mode,
                  reads.topk * reads.requests, np.full(d, -1, np.int64), np.full(d, -1, np.int64),
                  np.zeros(d, np.uint8), np.full(d, -1, np.int64))


@nb.njit(cache=True)
def compute_quotas(capacity, reuse, mode, unit, quota):
    layers = reuse.shape[0]
    quota[:] = 0
    if mode == 0:
        total = reuse.sum()
        frac = np.empty(layers)
        given = 0
        for l in range(layers):
            share = capacity * reuse[l] / total
            quota[l] = int(share)
            frac[l] = share - quota[l]
            given += quota[l]
        order = np.argsort(-frac, kind="mergesort")
        for j in range(capacity - given):
            quota[order[j % layers]] += 1
    else:
        order = np.argsort(-reuse, kind="mergesort")  # stable: ties keep the lower layer first
        left = capacity
        for l in order:
            if left <= 0:
                break
            quota[l] = min(unit, left)
            left -= quota[l]


@nb.njit(cache=True)
def _quota(tid, layer, step, capacity, layers, mode, unit, prev, nxt, inside, last_step):
    ends = np.full((layers, 2), -1, np.int64)  # each layer's LRU list
    count = np.zeros(layers, np.int64)
    quota = np.zeros(layers, np.int64)
    reads = np.zeros(layers, np.int64)
    reused = np.zeros(layers, np.int64)
    size, hits = 0, 0
    cur_step = -1
    for i in range(tid.shape[0]):
        x, l, s = tid[i], layer[i], step[i]
        if s != cur_step:
            cur_step = s
            compute_quotas(capacity, (reused + 1.0) / (reads + 1.0), mode, unit, quota)
        if s > 0:  # reuse: the share of a layer's reads at step s also read at step s-1
            reads[l] += 1
            if last_step[x] == s - 1:
                reused[l] += 1
        last_step[x] = s
        if inside[x]:
            hits += 1
            h, t = dlist.unlink(x, prev, nxt, ends[l, 0], ends[l, 1])
            ends[l, 0], ends[l, 1] = dlist.push_head(x, prev, nxt, h, t)
            continue
        if size < capacity:
            victim_layer = -1
        elif count[l] < quota[l]:
            victim_layer, over = -1, 0
            for j in range(layers):
                if count[j] - quota[j] > over:
                    over = count[j] - quota[j]
                    victim_layer = j
        elif quota[l] == 0:
            continue  # not cached
        else:
            victim_layer = l
        if victim_layer >= 0:
            v, ends[victim_layer, 0], ends[victim_layer, 1] = dlist.pop_tail(
                prev, nxt, ends[victim_layer, 0], ends[victim_layer, 1])
            inside[v] = 0
            count[victim_layer] -= 1
            size -= 1
        inside[x] = 1
        ends[l, 0], ends[l, 1] = dlist.push_head(x, prev, nxt, ends[l, 0], ends[l, 1])
        count[l] += 1
        size += 1
    return hits
