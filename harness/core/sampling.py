"""Set sampling: simulate one LLC set group in N and scale the counts (Kessler, Hill and Wood,
"A comparison of trace-sampling techniques for multi-megabyte caches", IEEE Trans. Computers,
1994; the sampled monitors of UCP, Qureshi and Patt, MICRO 2006).

The sets of an LLC of S sets form groups of G consecutive sets; group ``g`` is sampled when
``g mod N == 0``. Every line that maps into a sampled set is simulated exactly as in the whole
cache (a set's behaviour depends only on the lines that map to it), every other line is not
generated at all, and counts are scaled by N. With S a multiple of G x N, a line's group is
``(line // G) mod N`` whatever S, so a stream can tell a sampled line from its address alone.

What sampling changes: a KV token's lines are consecutive (``token_stride / 64`` of them), so a
token whose lines straddle a group's edge is seen in part, and its whole-token eviction and
token-policy ranking then act on that part only. G is large against a token (at least 64 sets,
and as large as S allows, up to 1,024) so that few tokens straddle; the error this leaves is
measured against full simulation (``bench/set_sampling.py``, ``tests/data/set_sampling/``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import UserError

MAX_GROUP_SETS = 1024
MIN_GROUP_SETS = 64


@dataclass(frozen=True)
class SetSample:
    """One group of ``group_sets`` consecutive sets in ``every`` is simulated (both powers of
    two)."""

    every: int
    group_sets: int

    @classmethod
    def for_sets(cls, sets: int, every: int) -> SetSample:
        """The sample of one group in ``every`` for an LLC of ``sets`` sets: the largest group
        (up to 1,024 sets) such that ``sets`` is a multiple of group x every; a one-line
        UserError when ``every`` is not a power of two or the sets do not allow groups of at
        least 64 sets."""
        if every < 1 or every & (every - 1):
            raise UserError(f"--sample-sets takes a power of two (1 in N set groups), got {every}")
        group = MAX_GROUP_SETS
        while group >= MIN_GROUP_SETS and sets % (group * every):
            group //= 2
        if group < MIN_GROUP_SETS:
            raise UserError(f"an LLC of {sets:,} sets cannot be sampled 1 in {every}: that needs groups of at "
                            f"least {MIN_GROUP_SETS} sets, {every} x {MIN_GROUP_SETS} dividing the sets; "
                            "sample fewer groups")
        return cls(every, group)

    @property
    def group_shift(self) -> int:
        return self.group_sets.bit_length() - 1

    def sampled_lines(self, first: int, count: int) -> int:
        """How many of the ``count`` consecutive lines from ``first`` fall into sampled sets."""
        period, g = self.group_sets * self.every, self.group_sets

        def below(line: int) -> int:  # sampled lines in [0, line)
            whole, rest = divmod(line, period)
            return whole * g + min(rest, g)

        return below(first + count) - below(first)

    def to_dict(self) -> dict:
        return {"every": self.every, "group_sets": self.group_sets}
