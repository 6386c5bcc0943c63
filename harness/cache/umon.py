"""Utility monitors: the hits each traffic class would get in a way partition of its own, for every
number of ways at once (Qureshi and Patt, "Utility-Based Cache Partitioning", MICRO 2006: UMON).

A class that allocates only in its own ``w`` ways under line LRU holds, in each set, exactly the
``w`` most recently used of its own lines there (no other class's line enters those ways, and its
lines enter no other ways), so an access hits iff its line is among the ``w`` most recent distinct
lines of its class in its set: its per-set LRU stack distance is below ``w``. One pass that keeps
each class's stack of the ``ways`` most recent lines per set therefore gives the hits of every
reservation ``w = 0 .. ways`` of every class at once; for line-LRU reservations they are exact
(``tests/test_search.py`` checks them against the LLC), for a reservation under a token policy
they are LRU's hits, which the policy's own differ from.

The monitors run on the lines of a set sample (``harness.core.sampling``), as UMON's do: the
histograms are of the sampled sets, the caller scales them to the stream's counts. Weight scans
and every other weights line are skipped: in a partition of their own the weights hit nothing
(each is read once per decode step, and a step's weights are many times any LLC).
"""

from __future__ import annotations

from collections.abc import Iterable

import numba as nb
import numpy as np

from harness.core.accesstrace import LineAccesses
from harness.core.sampling import SetSample
from harness.core.traffic import INDEX, KV, KV_WRITE

MONITORED = ("kv", "index")  # the classes a reservation names, weights aside (see the docstring)
_SLOT = np.full(8, -1, dtype=np.int64)  # class code -> monitor (kv and kv_write share the KV ways)
_SLOT[KV], _SLOT[KV_WRITE], _SLOT[INDEX] = 0, 0, 1


@nb.njit(nogil=True, cache=True)
def _monitor(lines, cls, phases, slot_of, set_of, n_sets, ways, stacks, hist):
    """Per access of a monitored class: its stack distance among its class's lines in its set
    (``ways``: deeper than the stack), counted in ``hist[phase, monitor, distance]``; then the
    line moves to the top of the stack."""
    for i in range(lines.shape[0]):
        m = slot_of[cls[i]]
        if m < 0:
            continue
        line = lines[i]
        s = set_of[line % n_sets]
        if s < 0:  # not a sampled set (a stream cut to a sample has none)
            continue
        stack = stacks[m, s]
        depth = ways
        for d in range(ways):
            if stack[d] == line:
                depth = d
                break
        hist[phases[i], m, depth] += 1
        for d in range(min(depth, ways - 1), 0, -1):
            stack[d] = stack[d - 1]
        stack[0] = line


def utility(chunks: Iterable[LineAccesses], sets: int, ways: int, sample: SetSample | None = None,
            phases: int | None = None) -> np.ndarray:
    """``hist[phase, m, d]``: accesses of monitor ``m`` (:data:`MONITORED`) in each phase whose
    line was the ``d``-th most recent of its class in its set (``d = ways``: deeper, or new).
    The hits of ``w`` reserved ways are ``hist[..., :w].sum(-1)``. ``phases``: phase ids are
    below it (default: grown as needed)."""
    rows = sample.sampled_sets if sample is not None else np.arange(sets, dtype=np.int64)
    set_of = np.full(sets, -1, dtype=np.int64)
    set_of[rows] = np.arange(len(rows), dtype=np.int64)
    stacks = np.full((len(MONITORED), len(rows), ways), -1, dtype=np.int64)
    hist = np.zeros((phases or 1, len(MONITORED), ways + 1), dtype=np.int64)
    for acc in chunks:
        lines, cls, phase = acc.line, acc.cls, acc.phase  # weights (scans or lines) are not monitored
        if len(phase) and phase.max() >= len(hist):
            grown = np.zeros((int(phase.max()) + 1, *hist.shape[1:]), dtype=np.int64)
            grown[:len(hist)] = hist
            hist = grown
        _monitor(lines, cls, phase, _SLOT, set_of, sets, ways, stacks, hist)
    return hist
