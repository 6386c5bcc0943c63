"""``streak``: keep the tokens most likely to be selected again, predicted from their past.

A token's streak is the number of consecutive decode steps its layer has selected it, up to its
latest read (it restarts at 1 after a gap). Cached tokens are ranked by streak (ties: the least
recently read is the weakest); when a layer has been read at a step, its cached tokens that step
did not select drop to streak 0 (they are the first to go). A missed token is cached while there
is room; when the cache is full it replaces the weakest cached token only if its own streak is
higher, and is otherwise not cached. Past only: the streak of a token is known when it is read.

Cached tokens sit in one list per streak value and in one list per layer, both most recently
read first, so every step is O(1) apart from the demotion pass over a finished layer's tokens.

Why: between two reads of a token, (layers - 1) x k other tokens pass, a cyclic sweep that
defeats LRU below one step's footprint. Keeping a stable set of tokens that have been re-selected
step after step, and refusing newcomers that are less likely to be, turns that sweep into hits.

Hardware cost (as the LLC's reserved ways run it, ``harness.cache.llc``): a history entry for
every token read so far, its tag, last read step and streak (ceil(log2(D + 1)) bits each, D the
longest decode), in a table the kernel keeps at load <= 1/2 (a power of two of slots, at least
2 x 4096). Per resident record: its streak and last read step (the key, and the demotion test
when its layer's step ends), a recency rank for ties (ceil(log2 T) bits), and its links in its
layer's list of records (two record indices) that the demotion walks; plus the record
bookkeeping of every token policy (``HardwareCost``).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist, hashtab
from harness.cache.policies.base import REFERENCE, HardwareCost, Policy
from harness.cache.policies.ways import (
    F_KEY,
    F_OWN,
    F_TIME,
    F_TOKEN,
    SEQ,
    ReservedWays,
    history_entry,
    layer_of,
)
from harness.cache.tokencache import NO_MASK

# The reserved ways: a record's streak, its last read step and its neighbours in its layer's list
# of records; the current (step, layer) group of token reads (global registers); a history
# entry per token read holds its (last read step, streak). A record's key: streak * SEQ + time.
F_STREAK, F_LASTSTEP, F_LPREV, F_LNEXT = F_OWN, F_OWN + 1, F_OWN + 2, F_OWN + 3
G_GROUP_STEP, G_GROUP_LAYER = 0, 1


@nb.njit(inline="always")
def _key(streak, now):
    return streak * SEQ + now


@nb.njit(inline="always")
def _on_read(tok, s, records, g, tkeys, tvals, hkeys, hvals, layer_ends, now, kv_lines, reserved_lines):
    """A read of token ``tok`` at step ``s`` starts. When the reads move on to another
    (step, layer), the finished layer's cached tokens that step did not select drop to streak 0
    (key = their latest access); then the token's streak is updated and, if it is cached, its
    key becomes streak * SEQ + now."""
    layer = layer_of(tok)
    if s != g[G_GROUP_STEP] or layer != g[G_GROUP_LAYER]:
        done_step, done_layer = g[G_GROUP_STEP], g[G_GROUP_LAYER]
        if done_layer >= 0:
            r = layer_ends[done_layer]
            while r >= 0:
                if records[r, F_LASTSTEP] < done_step and records[r, F_STREAK] > 0:
                    records[r, F_STREAK] = 0
                    records[r, F_KEY] = records[r, F_TIME]
                r = records[r, F_LNEXT]
        g[G_GROUP_STEP], g[G_GROUP_LAYER] = s, layer
    e, added = history_entry(tok, hkeys, hvals)
    if added:
        hvals[e, 0] = -1
    hvals[e, 1] = hvals[e, 1] + 1 if hvals[e, 0] == s - 1 else 1
    hvals[e, 0] = s
    c = hashtab.find(tkeys, tok)
    if c >= 0:
        rec = tvals[c, 0]
        records[rec, F_STREAK] = hvals[e, 1]
        records[rec, F_LASTSTEP] = s
        records[rec, F_KEY] = _key(hvals[e, 1], now)
    return added


@nb.njit(inline="always")
def _insert(rec, tok, records, g, hkeys, hvals, layer_ends, now):
    """A token became resident: its key from its streak, and into its layer's list."""
    h = hashtab.find(hkeys, tok)
    records[rec, F_STREAK] = hvals[h, 1] if h >= 0 else 0
    records[rec, F_LASTSTEP] = hvals[h, 0] if h >= 0 else -1
    records[rec, F_KEY] = _key(records[rec, F_STREAK], now)
    layer = layer_of(tok)
    records[rec, F_LPREV] = -1
    records[rec, F_LNEXT] = layer_ends[layer]
    if layer_ends[layer] >= 0:
        records[layer_ends[layer], F_LPREV] = rec
    layer_ends[layer] = rec


@nb.njit(inline="always")
def _refuse(tok, victim, key, records, hkeys, hvals, kv_lines, reserved_lines):
    """Not admitted: not stronger than every token of this set."""
    e = hashtab.find(hkeys, tok)
    return (hvals[e, 1] if e >= 0 else 0) <= key // SEQ


@nb.njit(inline="always")
def _release(rec, records, layer_ends):
    """Out of its layer's list."""
    p, q = records[rec, F_LPREV], records[rec, F_LNEXT]
    if p >= 0:
        records[p, F_LNEXT] = q
    else:
        layer_ends[layer_of(records[rec, F_TOKEN])] = q
    if q >= 0:
        records[q, F_LPREV] = p


class Streak(Policy):
    name = "streak"
    description = "predictive: keep tokens re-selected in the most consecutive steps, admit only stronger ones"
    reserved_ways = ReservedWays(insert=_insert, on_read=_on_read, refuse=_refuse, release=_release, history=True,
                                 layer_lists=True, initial_g=(-1, -1))

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        link = ref.bits(ref.record_slots)
        return HardwareCost.token_policy(2 * ref.step_bits + ref.rank_bits + 2 * link, ref,
                                         history_bits=ref.token_id_bits + 2 * ref.step_bits)

    def fa_hits(self, reads, capacity):
        return self._run(reads, capacity, NO_MASK)

    def fa_hit_mask(self, reads, capacity):
        hit = np.zeros(len(reads), np.uint8)
        self._run(reads, capacity, hit)
        return hit

    @staticmethod
    def _run(reads, capacity, hit) -> int:
        d = reads.id_space
        levels = int(reads.step.max()) + 3  # streaks run from 0 to the number of steps

        def full(value):
            return np.full(d, value, np.int64)

        return _streak(reads.tid, reads.layer, reads.step, capacity, reads.layers, full(-1), full(0), full(-1),
                       full(-1), full(-1), full(-1), full(-1), np.zeros(d, np.int32),
                       np.full((levels, 2), -1, np.int64), hit)


@nb.njit(cache=True)
def _streak(tid, layer, step, capacity, layers, last_step, streak, bucket_of, bprev, bnext, lprev, lnext, tok_layer, buckets,
            hit):
    lends = np.full((layers, 2), -1, np.int64)  # each layer's cached tokens, most recently read first
    size, hits, low = 0, 0, 0
    group_step, group_layer = -1, -1
    top = buckets.shape[0] - 1
    for i in range(tid.shape[0]):
        x, l, s = tid[i], layer[i], step[i]
        if s != group_step or l != group_layer:
            if group_layer >= 0:  # the finished layer-step: cached tokens it did not select drop to 0
                y = lends[group_layer, 1]
                while y >= 0:
                    if last_step[y] < group_step and bucket_of[y] > 0:
                        b = bucket_of[y]
                        buckets[b, 0], buckets[b, 1] = dlist.unlink(y, bprev, bnext, buckets[b, 0], buckets[b, 1])
                        buckets[0, 0], buckets[0, 1] = dlist.push_head(y, bprev, bnext, buckets[0, 0], buckets[0, 1])
                        bucket_of[y] = 0
                        low = 0
                    y = lprev[y]
            group_step, group_layer = s, l
        streak[x] = streak[x] + 1 if last_step[x] == s - 1 else 1
        last_step[x] = s
        if bucket_of[x] >= 0:
            hits += 1
            if hit.shape[0]:
                hit[i] = 1
            b = bucket_of[x]
            buckets[b, 0], buckets[b, 1] = dlist.unlink(x, bprev, bnext, buckets[b, 0], buckets[b, 1])
            lends[l, 0], lends[l, 1] = dlist.unlink(x, lprev, lnext, lends[l, 0], lends[l, 1])
        else:
            if size == capacity:
                while buckets[low, 1] < 0:
                    low += 1
                if streak[x] <= low:
                    continue  # weaker than everything cached: not admitted
                v, buckets[low, 0], buckets[low, 1] = dlist.pop_tail(bprev, bnext, buckets[low, 0], buckets[low, 1])
                bucket_of[v] = -1
                vl = tok_layer[v]
                lends[vl, 0], lends[vl, 1] = dlist.unlink(v, lprev, lnext, lends[vl, 0], lends[vl, 1])
            else:
                size += 1
            tok_layer[x] = l
        lends[l, 0], lends[l, 1] = dlist.push_head(x, lprev, lnext, lends[l, 0], lends[l, 1])
        b = min(streak[x], top)
        buckets[b, 0], buckets[b, 1] = dlist.push_head(x, bprev, bnext, buckets[b, 0], buckets[b, 1])
        bucket_of[x] = b
        if b < low:
            low = b
    return hits
