"""Set sampling: simulate a sample of the LLC's sets and scale the counts (Kessler, Hill and
Wood, "A comparison of trace-sampling techniques for multi-megabyte caches", IEEE Trans.
Computers, 1994; the sampled monitors of UCP, Qureshi and Patt, MICRO 2006).

The sets of an LLC of S sets form groups of G consecutive sets; one group in each run of N
consecutive groups is sampled, at a position a hash of the run's number draws
(:attr:`SetSample.group_mask`), so that the sampled sets are spread evenly over the cache with no
period that a stream's layout could alias with (KV pages, token
strides and per-layer arrays are all periodic in the set index; a sample of every N-th group
caught the same token positions of every page and was biased by their selection). Every line that
maps into a sampled set is simulated exactly as in the whole cache (a set's behaviour depends only
on the lines that map to it), every other line is not generated at all; counts are scaled to the
stream's own line counts, and what has no such reference by S over the sampled sets.

MSHR merging (harness.cache.llc) under a sample: the sampled sets see about their share of a
phase's accesses, so the window of requests in flight shrinks by that share
(``LLCState(..., mshr_window=W)``), and the merged misses are scaled as the misses are.

What sampling changes: a KV token's lines are consecutive (``token_stride / 64`` of them), so a
token whose lines straddle a group's edge is seen in part, and its whole-token eviction and
token-policy ranking then act on that part only. The error this leaves is measured against full
simulation (``bench/set_sampling.py``, ``tests/data/set_sampling/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from harness.core.errors import UserError

# Groups of 64 sets: small enough that the sampled sets see the stream's positions evenly (groups
# of 256 and 1,024 left errors of 4 % and 22 % in KV misses on 8-line tokens, whose layout
# repeats every 4,096 lines), large enough that few 11-line DeepSeek tokens straddle two groups.
GROUP_SETS = 64
MIN_GROUPS_PER_SAMPLED = 8  # at least this many groups per sampled one, so that the hash spreads
MIX = 0x45D9F3B             # a 32-bit integer mixing function's multiplier (T. Mueller's hash)


def mix(x):
    """A 32-bit integer hash whose output bits all depend on every input bit (of an int64
    array; every product fits 64 bits)."""
    x = (((x >> 16) ^ x) * MIX) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * MIX) & 0xFFFFFFFF
    return (x >> 16) ^ x


@dataclass(frozen=True)
class SetSample:
    """About one group of ``group_sets`` consecutive sets in ``every`` (a power of two) is
    simulated, of an LLC of ``sets`` sets."""

    every: int
    group_sets: int
    sets: int

    @classmethod
    def for_sets(cls, sets: int, every: int) -> SetSample:
        """The sample of one group in ``every``: groups of up to 64 sets (the largest power of
        two that divides ``sets``), at least 8 groups per sampled one; a one-line UserError when
        ``every`` is not a power of two or the sets are too few."""
        if every < 1 or every & (every - 1):
            raise UserError(f"--sample-sets takes a power of two (1 in N set groups), got {every}")
        group = GROUP_SETS
        while group > 1 and sets % group:
            group //= 2
        if sets // group < MIN_GROUPS_PER_SAMPLED * every:
            raise UserError(f"an LLC of {sets:,} sets is too small to sample 1 in {every} groups of sets "
                            f"(groups of {group}); sample fewer")
        return cls(every, group, sets)

    @property
    def group_shift(self) -> int:
        return self.group_sets.bit_length() - 1

    @property
    def groups(self) -> int:
        return self.sets // self.group_sets

    @cached_property
    def group_mask(self) -> np.ndarray:
        """Which set groups are sampled (bool per group): one in each run of ``every``
        consecutive groups, at a position the hash of the run's number draws."""
        groups = np.arange(self.groups, dtype=np.int64)
        return groups % self.every == mix(groups // self.every) % self.every

    @cached_property
    def sampled_sets(self) -> np.ndarray:
        """The sampled sets, in order."""
        chosen = np.flatnonzero(self.group_mask)
        return (chosen[:, None] * self.group_sets + np.arange(self.group_sets)).ravel()

    @property
    def scale(self) -> float:
        """The cache's sets over the sampled ones."""
        return self.sets / len(self.sampled_sets)

    @cached_property
    def _groups_before(self) -> np.ndarray:
        """Sampled groups among the first j groups of a period of the sets, j = 0 .. groups."""
        return np.concatenate([[0], np.cumsum(self.group_mask)]).astype(np.int64)

    def _lines_below(self, x: int) -> int:
        """How many of the lines 0 .. x - 1 map to sampled sets (the sets repeat every ``sets``
        lines, a group every ``group_sets``)."""
        period, g = self.sets, self.group_sets
        full, rest = divmod(int(x), period)
        group, within = divmod(rest, g)
        return (full * int(self._groups_before[-1]) + int(self._groups_before[group])) * g \
            + (within if group < self.groups and self.group_mask[group] else 0)

    def sampled_lines(self, first: int, count: int) -> int:
        """How many of the ``count`` consecutive lines from ``first`` map to sampled sets (in
        constant time: a weight scan of millions of lines asks this once per layer and step)."""
        if count <= 0:
            return 0
        return self._lines_below(first + count) - self._lines_below(first)

    def to_dict(self) -> dict:
        return {"every": self.every, "group_sets": self.group_sets, "sampled_sets": int(len(self.sampled_sets)),
                "sets": self.sets}
