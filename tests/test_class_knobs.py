"""Class-aware LLC knobs (harness.cache.partitions): reservations per traffic class and insertion
hints, each on a hand-made sequence whose outcome is worked out by hand; weight scans under them
equal their lines simulated one by one."""

from __future__ import annotations

import numpy as np
import pytest

from harness.cache.llc import LLCConfig, LLCState
from harness.cache.partitions import PERSIST_SCALE
from harness.core.errors import UserError
from harness.core.traffic import INDEX, KV, OTHER, WEIGHTS

ONE_SET = 4 * 64  # a 4-way LLC of one set: every line maps to set 0


def run(cfg: LLCConfig, accesses: list[tuple[int, int]]) -> tuple[list[int], LLCState]:
    """(line, class) accesses through a fresh LLC; the hit flags and the final state."""
    state = LLCState(cfg)
    lines = np.array([a for a, _ in accesses], dtype=np.int64)
    cls = np.array([c for _, c in accesses], dtype=np.uint8)
    hits, _, _ = state.access(lines, cls, np.full(len(lines), -1, np.int64), np.zeros(len(lines), np.uint8))
    return list(hits), state


def ways_of(state: LLCState) -> list[int]:
    return list(state.resident()[0])


def test_an_index_reservation_keeps_index_lines_in_their_ways_and_out_of_the_others():
    cfg = LLCConfig.make(ONE_SET, 4, reserve_index=2)
    # index lines 10, 11, 12 fill ways 0-1 (the third evicts 10); other lines 20, 21, 22 ways 2-3
    hits, state = run(cfg, [(10, INDEX), (11, INDEX), (20, OTHER), (21, OTHER), (12, INDEX), (22, OTHER),
                            (11, OTHER), (12, INDEX)])
    assert ways_of(state) == [12, 11, 22, 21]
    assert hits == [0, 0, 0, 0, 0, 0, 1, 1]  # a lookup hits wherever the line is


def test_reservations_are_laid_out_kv_then_index_then_weights():
    cm = LLCConfig.make(16 * 64, 16, 4, "lru", reserve_index=3, reserve_weights=2).class_map
    assert cm.region[KV].tolist() == [0, 4] and cm.region[INDEX].tolist() == [4, 7]
    assert cm.region[WEIGHTS].tolist() == [7, 9] and cm.region[OTHER].tolist() == [9, 16]


def test_a_streaming_fill_is_the_next_victim():
    cfg = LLCConfig.make(2 * 64, 2, hint_index="streaming")
    # 1 (other) then index 2 (streaming): index 3 evicts 2, not 1; then other 4 evicts 3
    _, state = run(cfg, [(1, OTHER), (2, INDEX), (3, INDEX)])
    assert sorted(ways_of(state)) == [1, 3]
    _, state = run(cfg, [(1, OTHER), (2, INDEX), (3, INDEX), (4, OTHER)])
    assert sorted(ways_of(state)) == [1, 4]


def test_bip_inserts_every_32nd_fill_as_the_most_recent():
    cfg = LLCConfig.make(2 * 64, 2, hint_index="bip")
    # a cyclic scan of index lines 100.. beside one other line 1: fills 1-31 are next victims (each
    # evicts the one before), the 32nd is the most recent, so the 33rd evicts line 1
    scan = [(1, OTHER)] + [(100 + i, INDEX) for i in range(31)] + [(200, INDEX)]
    _, state = run(cfg, scan)
    assert sorted(ways_of(state)) == [1, 200]
    _, state = run(cfg, scan + [(201, INDEX)])
    assert sorted(ways_of(state)) == [200, 201]


def _persisting_lines(n: int, ratio: float, start: int = 0) -> list[int]:
    """Lines from ``start`` that a persisting:ratio hint marks, the first ``n``."""
    from harness.cache.llc import _mix32

    out, line = [], start
    while len(out) < n:
        if _mix32(line) < ratio * PERSIST_SCALE:
            out.append(line)
        line += 1
    return out


def test_persisting_lines_take_at_most_the_set_aside_and_only_they_evict_each_other():
    cfg = LLCConfig.make(ONE_SET, 4, hint_index="persisting:0.5", set_aside=2 * 64)  # 2 of 4 ways
    p = _persisting_lines(3, 0.5)
    hits, state = run(cfg, [(p[0], INDEX), (p[1], INDEX), (1, OTHER), (2, OTHER), (3, OTHER), (4, OTHER)])
    assert sorted(ways_of(state)) == sorted([p[0], p[1], 3, 4])  # the others cycle through 2 ways
    _, state = run(cfg, [(p[0], INDEX), (p[1], INDEX), (1, OTHER), (p[2], INDEX)])
    assert p[0] not in ways_of(state) and p[2] in ways_of(state)  # at the cap: it evicts a persisting line
    assert state.counters[1] == 1  # one eviction


def test_an_index_lines_hint_streams_the_ones_it_does_not_keep():
    cfg = LLCConfig.make(ONE_SET, 4, hint_index="persisting:0.5", set_aside=2 * 64)
    kept = set(_persisting_lines(40, 0.5))
    streamed = [line for line in range(200) if line not in kept][:3]
    # the first two fill the free ways; the third evicts the second, the newest next victim
    _, state = run(cfg, [(1, OTHER), (2, OTHER)] + [(s, INDEX) for s in streamed])
    assert ways_of(state) == [1, 2, streamed[0], streamed[2]]


@pytest.mark.parametrize("fields, message", [
    ({"reserve_ways": 8, "reserve_index": 6, "reserve_weights": 4}, "take 18 ways of 16"),
    ({"reserve_ways": 4, "policy": "token-lru", "hint_kv": "streaming"}, "decides their insertions"),
    ({"hint_weights": "bip"}, "weights take the hints normal or streaming"),
    ({"hint_index": "persisting:0.5"}, "needs --set-aside"),
    ({"set_aside": 1 << 20}, "give a class the hint persisting"),
    ({"hint_index": "hot"}, "is not normal, streaming, bip or persisting"),
    ({"hint_index": "persisting:1.5", "set_aside": 1 << 20}, "must be in (0, 1]"),
])
def test_knobs_that_do_not_apply_are_one_line_errors(fields, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LLCConfig.make("16MiB", 16, **fields)
