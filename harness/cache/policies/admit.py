"""``admit``: LRU with frequency-based admission (TinyLFU-style) at token granularity.

Every read, hit or miss, counts towards its token's frequency; all frequencies halve every
``window`` reads (default 8 x the capacity) so the estimate follows the recent past. A missed
token is inserted while the cache has room; when it is full it is inserted only if its
frequency is higher than that of the LRU token, which is then evicted; otherwise the missed
token is not cached (the reservation keeps the colder-looking token out).

Hardware cost: per resident record a recency rank (ceil(log2 T) bits) and the record bookkeeping
of every token policy (``HardwareCost``); a history entry for every token read so far, in a
table the kernel keeps at load <= 1/2 (a power of two of slots, at least 2 x 4096): the token's
tag and its frequency, at most its reads, one per decode step: ceil(log2(D + 1)) bits. Halving
all counters at the end of each window (TinyLFU's reset: Einziger, Friedman and Manes, "TinyLFU:
A Highly Efficient Cache Admission Policy", ACM Transactions on Storage 13(4), 2017) needs no
per-entry state; the simulator halves lazily from a per-entry epoch, which gives the same counts."""

from __future__ import annotations

import numba as nb
import numpy as np

from harness.cache import dlist, hashtab
from harness.cache.policies.base import REFERENCE, HardwareCost, Policy, check_int
from harness.cache.policies.token_lru import insert_recent, touch_recent
from harness.cache.policies.ways import F_TOKEN, ReservedWays, history_entry

# Frequencies halve every ADMIT_WINDOW x capacity reads (in the LLC's reserved ways: x reserved
# lines of kv reads).
ADMIT_WINDOW = 8


@nb.njit(inline="always")
def _halved(count, last_epoch, epoch):
    """A read count as of epoch ``last_epoch``, halved once per epoch since."""
    shift = epoch - last_epoch
    return count >> shift if shift < 63 else 0


# The reserved ways: LRU as token-lru; a history entry per token read holds its (read count,
# epoch of its latest read).
@nb.njit(inline="always")
def _epoch(kv_lines, reserved_lines):
    return (kv_lines - 1) // max(ADMIT_WINDOW * reserved_lines, 1)


@nb.njit(inline="always")
def _history_freq(tok, epoch, hkeys, hvals):
    e = hashtab.find(hkeys, tok)
    return _halved(hvals[e, 0], hvals[e, 1], epoch) if e >= 0 else 0


@nb.njit(inline="always")
def _on_read(tok, step, records, g, tkeys, tvals, hkeys, hvals, layer_ends, now, kv_lines, reserved_lines):
    """A read of ``tok`` starts: count it."""
    epoch = _epoch(kv_lines, reserved_lines)
    e, added = history_entry(tok, hkeys, hvals)
    hvals[e, 0] = 1 if added else _halved(hvals[e, 0], hvals[e, 1], epoch) + 1
    hvals[e, 1] = epoch
    return added


@nb.njit(inline="always")
def _refuse(tok, victim, key, records, hkeys, hvals, kv_lines, reserved_lines):
    """Not admitted: not read more often than the LRU token."""
    epoch = _epoch(kv_lines, reserved_lines)
    return _history_freq(tok, epoch, hkeys, hvals) <= _history_freq(records[victim, F_TOKEN], epoch, hkeys, hvals)


class Admit(Policy):
    name = "admit"
    description = "LRU that admits a missed token only if it is read more often than the LRU token"
    defaults = {"window": 0}  # 0: ADMIT_WINDOW (8) x capacity, as in the LLC's reserved ways
    reserved_ways = ReservedWays(touch=touch_recent, insert=insert_recent, on_read=_on_read, refuse=_refuse,
                                 history=True)

    @classmethod
    def hardware_cost(cls, ref=REFERENCE):
        return HardwareCost.token_policy(ref.rank_bits, ref, history_bits=ref.token_id_bits + ref.step_bits)

    def check(self, reads, capacity):
        super().check(reads, capacity)
        check_int(self.name, "window", self.params["window"], 0)

    def fa_hits(self, reads, capacity):
        d = reads.id_space
        window = int(self.params["window"]) or ADMIT_WINDOW * capacity
        return _admit(reads.tid, capacity, window, np.full(d, -1, np.int64), np.full(d, -1, np.int64),
                      np.zeros(d, np.uint8), np.zeros(d, np.int64), np.zeros(d, np.int64))


@nb.njit(cache=True)
def _admit(tid, capacity, window, prev, nxt, inside, freq, epoch_of):
    head, tail = -1, -1  # head = most recent
    size, hits = 0, 0
    for i in range(tid.shape[0]):
        t = tid[i]
        epoch = i // window
        freq[t] = _halved(freq[t], epoch_of[t], epoch) + 1
        epoch_of[t] = epoch
        if inside[t]:
            hits += 1
            head, tail = dlist.unlink(t, prev, nxt, head, tail)
        else:
            if size == capacity:
                if freq[t] <= _halved(freq[tail], epoch_of[tail], epoch):
                    continue  # not admitted
                victim, head, tail = dlist.pop_tail(prev, nxt, head, tail)
                inside[victim] = 0
            else:
                size += 1
            inside[t] = 1
        head, tail = dlist.push_head(t, prev, nxt, head, tail)
    return hits
