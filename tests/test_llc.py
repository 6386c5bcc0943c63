"""Hand-worked sequences on a 2-set, 4-way cache (512 B): line L lives in set L % 2.

Every expected hit/miss string below is worked out by hand in the comments.
"""

import numpy as np
import pytest
from helpers import hit_string

from harness.cache.llc import (
    C_BYPASS,
    C_EVICT,
    C_TOKEN_INVAL,
    C_TR_FULL,
    C_TR_MISS,
    C_TR_PARTIAL,
    C_WB,
    LLCConfig,
)
from harness.core.errors import UserError

SMALL = 2 * 4 * 64


def cfg(reserve=0, policy="token-lru", whole=True):
    return LLCConfig.make(SMALL, 4, reserve, policy, whole)


def test_lru_baseline_set0():
    # set 0 gets lines 0,2,4,6 (fills ways 0..3), 8 evicts LRU line 0, 0 then evicts 2,
    # 4 is still resident (hit), 2 was evicted (miss, evicts 6).
    seq = [(x, "other", -1) for x in (0, 2, 4, 6, 8, 0, 4, 2, 8)]
    hits, state = hit_string(cfg(0, "lru"), seq)
    assert hits == "MMMMMMHMH"
    # free ways are filled lowest first; ways after fills: [0,2,4,6]; 8 -> way0 [8,2,4,6]; 0 -> way1 [8,0,4,6];
    # 4 hit; 2 -> LRU is 6 (way3) [8,0,4,2]; 8 hit.
    assert state.resident()[0].tolist() == [8, 0, 4, 2]
    assert state.resident()[1].tolist() == [-1, -1, -1, -1]


def test_sets_are_line_address_mod_sets():
    # lines 1,3,5,7,9 all map to set 1; set 0 is untouched.
    hits, state = hit_string(cfg(0, "lru"), [(x, "other", -1) for x in (1, 3, 5, 7, 9, 1)])
    assert hits == "MMMMMM"
    assert state.resident()[0].tolist() == [-1] * 4
    assert state.resident()[1].tolist() == [9, 1, 5, 7]


def test_strict_partitioning_places_classes_in_their_ways():
    # R = 2: kv lines only in ways 0-1, other classes only in ways 2-3 (lowest free first).
    seq = [(0, "other", -1), (2, "kv", 7), (4, "index", -1), (6, "kv_write", 8),
           (8, "weights", -1), (10, "kv", 9)]
    hits, state = hit_string(cfg(2, "lru"), seq)
    # set0 after: other 0 -> w2; kv 2 -> w0; index 4 -> w3; kv_write 6 -> w1;
    # weights 8 evicts LRU of ways 2-3 = line 0 (w2); kv 10 evicts LRU of ways 0-1 = line 2 (w0).
    assert hits == "MMMMMM"
    assert state.resident()[0].tolist() == [10, 6, 8, 4]


def test_lookup_hits_wherever_the_line_is():
    # line 0 allocated by an 'other' request sits in a shared way; a kv read of it still hits.
    hits, _ = hit_string(cfg(2, "token-lru"), [(0, "other", -1), (0, "kv", 5)])
    assert hits == "MH"


def test_reserve_all_ways_bypasses_other_classes():
    hits, state = hit_string(cfg(4, "lru"), [(0, "other", -1), (0, "other", -1), (2, "kv", 1), (2, "kv", 1)])
    assert hits == "MMMH"
    assert state.counters[C_BYPASS] == 2


# Token-granular cases: R = 2 reserved ways. Token A = lines {0, 1}, B = {2, 3}, C = {4, 5};
# a token's first line is in set 0, its second in set 1.
A, B, C = 100, 200, 300


def test_token_lru_and_line_lru_choose_different_victims():
    # 0(A) -> s0w0, 2(B) -> s0w1, 1(A) -> s1w0. Line times: line0=1, line2=2; token times A=3, B=2.
    # 4(C) misses in full set 0: line-LRU evicts line 0 (oldest line), token-LRU evicts line 2
    # (token B is least recent). Then 0(A): a miss under line-LRU, a hit under token-LRU.
    seq = [(0, "kv", A), (2, "kv", B), (1, "kv", A), (4, "kv", C), (0, "kv", A)]
    assert hit_string(cfg(2, "lru"), seq)[0] == "MMMMM"
    assert hit_string(cfg(2, "token-lru"), seq)[0] == "MMMMH"


def test_whole_token_eviction_frees_ways_in_other_sets():
    # 0(A) s0w0, 2(B) s0w1, 3(B) s1w0, 1(A) s1w1: token times B=3, A=4.
    # 4(C) misses in set 0: victim is token B's line 2; whole-token eviction also invalidates
    # B's line 3 in set 1, so 5(C) fills the freed way 0 of set 1 without evicting anything.
    seq = [(0, "kv", A), (2, "kv", B), (3, "kv", B), (1, "kv", A), (4, "kv", C), (5, "kv", C),
           (1, "kv", A), (3, "kv", B)]
    hits, state = hit_string(cfg(2, "token-lru", whole=True), seq)
    assert hits == "MMMMMMHM"
    assert state.resident()[1].tolist()[:2] == [3, 1]  # 3 refilled in s1: victim token C (time 6) vs A (7)
    # evictions: line 2 (for 4), then for the last 3(B): set1 = [5(C), 1(A)], C least recent -> 5,
    # whole-token eviction also drops 4(C) in set 0.
    assert state.counters[C_EVICT] == 2
    assert state.counters[C_TOKEN_INVAL] == 2  # line 3, then line 4
    assert state.resident()[0].tolist()[:2] == [0, -1]

    # Without whole-token eviction line 3 stays: 5(C) must evict in set 1 (token B, time 3),
    # which is line 3 anyway; so the final 3(B) misses too, but 4(C) survives in set 0.
    hits, state = hit_string(cfg(2, "token-lru", whole=False), seq)
    assert hits == "MMMMMMHM"
    assert state.counters[C_TOKEN_INVAL] == 0
    assert state.resident()[0].tolist()[:2] == [0, 4]


def test_whole_token_eviction_changes_hits():
    # 0(A), 2(B), 3(B), 1(A); 4(C) evicts token B's line 2. Whole-token: line 3 goes too, so 3(B)
    # misses; without it 3(B) still hits.
    seq = [(0, "kv", A), (2, "kv", B), (3, "kv", B), (1, "kv", A), (4, "kv", C), (3, "kv", B)]
    assert hit_string(cfg(2, "token-lru", whole=True), seq)[0] == "MMMMMM"
    assert hit_string(cfg(2, "token-lru", whole=False), seq)[0] == "MMMMMH"


def test_token_accounting_full_partial_miss():
    # R = 4 (all ways reserved), line LRU. Consecutive kv lines of one token form one read.
    seq = [(0, "kv", A), (1, "kv", A),     # read A: both lines miss -> miss
           (2, "kv", B),                   # read B: miss
           (0, "kv", A), (1, "kv", A),     # read A: full hit
           (5, "kv", C), (7, "kv", C), (9, "kv", C), (11, "kv", C),  # read C: miss
           (0, "kv", A), (1, "kv", A)]     # read A: partial hit
    hits, state = hit_string(LLCConfig.make(SMALL, 4, 4, "lru"), seq)
    # set 1 before line 11: 1 (touched t5), 5 (t6), 7 (t7), 9 (t8): 11 evicts line 1.
    assert hits == "MMMHHMMMMHM"
    ctr = state.counters
    assert (ctr[C_TR_FULL], ctr[C_TR_PARTIAL], ctr[C_TR_MISS]) == (1, 1, 3)


def test_writebacks_count_dirty_evictions():
    seq = [(0, "other", -1, 1), (2, "other", -1), (4, "other", -1), (6, "other", -1), (8, "other", -1)]
    _, state = hit_string(cfg(0, "lru"), seq)
    assert state.counters[C_WB] == 1  # line 0 was written, then evicted by 8


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=SMALL, ways=4, reserve_ways=5), "reserve_ways"),
    (dict(size=1000, ways=4), "multiple"),
    (dict(size="32XB", ways=4), "not a size"),
    (dict(size=SMALL, ways=4, policy="mru"), "unknown policy"),
    (dict(size=SMALL, ways=0), "ways"),
])
def test_bad_configs(kwargs, message):
    with pytest.raises(UserError, match=message):
        LLCConfig.make(**kwargs)


def test_sizes_parse_binary_units():
    assert LLCConfig.make("32MiB", 16).sets == 32768
    assert LLCConfig.make("512KiB", 8).sets == 1024
    assert LLCConfig.make(np.int64(4096).item(), 4).sets == 16
