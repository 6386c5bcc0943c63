"""libCacheSim's algorithms (``lcs:``) on the token cache: where they overlap the project's
policies (LRU, Belady, LFU-DA) they are run side by side on the same small streams and compared;
then the replay machinery (reproducible randomised algorithms, library failures, the trace file)
and the hardware costs listed for the LLC's policies."""

import gc
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import reads, streams
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.cache.llc import RESERVED_POLICIES, LLCConfig, LLCState
from harness.cache.policies import POLICIES, HardwareReference, PolicyFailed, get_policy, zoo
from harness.cache.policies.base import table_slots
from harness.cache.policies.zoo import trace_of
from harness.cli import cli
from harness.study.policy_study import family_best, policy_sweep, streak_vs_zoo
from trace_gen.synthetic import write_synthetic_log

token_lists = st.lists(st.integers(0, 30), min_size=1, max_size=300)


@settings(max_examples=40, deadline=None)
@given(st.one_of(token_lists.map(reads), streams()), st.integers(1, 24))
def test_lcs_lru_is_token_lru(stream, capacity):
    assert get_policy("lcs:lru").run(stream, capacity) == get_policy("token-lru").run(stream, capacity)


@settings(max_examples=40, deadline=None)
@given(st.one_of(token_lists.map(reads), streams()), st.integers(2, 24))
def test_lcs_belady_lies_between_min_one_slot_smaller_and_min(stream, capacity):
    # libCacheSim's Belady always inserts a missed object (MIN without bypass); the project's
    # min may leave it out (bypass). Bypass-MIN is optimal over all policies, so it bounds
    # Belady from above. And Belady with C slots can do whatever a bypassing cache of C - 1
    # slots does, using its extra slot for the object that one would bypass; Belady is optimal
    # among policies that always insert, so bypass-MIN with C - 1 slots bounds it from below.
    # With INT64_MAX as "never again" misread, Belady would keep dead tokens and fall below.
    belady = get_policy("lcs:belady").run(stream, capacity)
    assert get_policy("min").run(stream, capacity - 1) <= belady <= get_policy("min").run(stream, capacity)


def lfu_da(tokens, capacity, rules):
    """LFU-DA by hand, under the project's rules (``"dsa-llc"``, harness.cache.policies.lfu) or
    those libcachesim 0.3.5's LFUDA follows (``"libCacheSim"``: its cache/eviction/LFUDA.c, as
    its behaviour shows). Returns the hits, or None where libCacheSim's LFUDA looks for its victim
    in an empty list (and dies of SIGSEGV). Also returns how many keys libCacheSim looks up one
    by one when it moves L up (every integer in between: with keys that double, billions).

    Both keep a key K per cached token, insert with K = L + 1 and evict the smallest K, ties to
    the token that entered its key's list first (the least recently read). They differ in
    - the hit: the project sets K = L + (reads since insertion); libCacheSim adds L to K, so
      before the first eviction (L = 0) a hit only moves the token to the back of its list;
    - L: the project sets it to the victim's K at each eviction; libCacheSim takes its victim
      from the list of key L (of key 1 while L < 2), sets L to that key, and whenever the list
      of key L empties (by an eviction or by a hit) moves L up to the smallest key left above
      it. With none left (the last cached token just left, as in a cache of one token), L stays
      on an empty list and the next eviction finds no victim."""
    key, count, entered = {}, {}, {}
    age, hits, scanned = 0, 0, 0  # L

    def smallest_key_above(level):
        nonlocal scanned
        above = [k for k in key.values() if k > level]
        scanned += (min(above) if above else max(key.values(), default=level)) - level
        return min(above) if above else level

    for now, x in enumerate(tokens):
        hit = x in key
        if hit and rules == "dsa-llc":
            count[x] += 1
            key[x] = age + count[x]
        elif hit:
            old = key.pop(x)
            key_after = old + age
            if old == age and old not in key.values():
                age = smallest_key_above(age)  # x has left its list and not yet joined the next
            key[x] = key_after
        elif len(key) == capacity:
            level = min(key.values()) if rules == "dsa-llc" else max(age, 1)
            candidates = [y for y in key if key[y] == level]
            if not candidates:
                return None, scanned
            age = key.pop(min(candidates, key=entered.get))
            if rules == "libCacheSim" and age not in key.values():
                age = smallest_key_above(age)
        if not hit:
            key[x], count[x] = age + 1, 1
        hits += hit
        entered[x] = now
    return hits, scanned


@settings(max_examples=60, deadline=None)
@given(st.one_of(token_lists.map(reads), streams()), st.integers(1, 24))
def test_lfu_and_lcs_lfuda_differ_exactly_by_their_hit_and_age_rules(stream, capacity):
    tokens = stream.tid.tolist()
    assert get_policy("lfu").run(stream, capacity) == lfu_da(tokens, capacity, "dsa-llc")[0]
    expected, scanned = lfu_da(tokens, capacity, "libCacheSim")
    assume(scanned < 10**6)  # more takes libCacheSim seconds to hours (test_a_replay_that_runs_too_long)
    if expected is None:
        with pytest.raises(PolicyFailed, match=r"LFUDA failed at capacity .* \(killed by signal 11\)"):
            get_policy("lcs:lfuda").run(stream, capacity)
    else:
        assert get_policy("lcs:lfuda").run(stream, capacity) == expected


def test_lfu_da_rules_by_hand():
    # A A B C A with 2 slots. Project: A in at K 1, its hit makes K = 0 + 2; B in at 1; C evicts
    # B (K 1), L = 1; A hits again: 2 hits. libCacheSim: A's hit comes before any eviction
    # (L = 0), so its K stays 1 and it only moves to the back of its list, behind nobody; B in
    # at 1 behind it; C evicts A, first in the list of key 1; A misses: 1 hit.
    tokens = [0, 0, 1, 2, 0]
    assert lfu_da(tokens, 2, "dsa-llc")[0] == get_policy("lfu").run(reads(tokens), 2) == 2
    assert lfu_da(tokens, 2, "libCacheSim")[0] == get_policy("lcs:lfuda").run(reads(tokens), 2) == 1
    # A B A with 1 slot: B evicts A (L = 1) and nothing is left above key 1, so L stays on the
    # empty list of key 1 while B sits at key 2; A's miss finds no victim there: SIGSEGV
    tokens = [0, 1, 0]
    assert lfu_da(tokens, 1, "libCacheSim")[0] is None
    with pytest.raises(PolicyFailed, match="signal 11"):
        get_policy("lcs:lfuda").run(reads(tokens), 1)


def test_a_replay_that_runs_too_long_is_stopped(monkeypatch):
    # A A B C repeated, 2 slots: each round doubles libCacheSim's LFUDA keys, and it looks up
    # every key in between one at a time: 2.7e12 lookups by the 40th round
    tokens = [0, 0, 1, 2] * 40
    assert lfu_da(tokens, 2, "libCacheSim")[1] > 10**12
    monkeypatch.setattr(zoo, "REPLAY_BASE_SECONDS", 1.0)
    monkeypatch.setattr(zoo, "DEFAULT_SECONDS_PER_READ", 0.0)
    with pytest.raises(PolicyFailed, match=r"LFUDA failed at capacity 2 \(still running after 1 s: stopped\)"):
        get_policy("lcs:lfuda").run(reads(tokens), 2)


def test_randomised_algorithms_give_the_same_hits_whatever_ran_before():
    # libCacheSim's random generator is per thread; every replay starts a fresh one
    stream = reads(np.random.default_rng(3).integers(0, 40, 2000))
    first = [get_policy(name).run(stream, 12) for name in ("lcs:random", "lcs:lhd", "lcs:lecar")]
    get_policy("lcs:cacheus").run(stream, 12)
    again = [get_policy(name).run(stream, 12) for name in ("lcs:lecar", "lcs:lhd", "lcs:random")][::-1]
    assert first == again


def test_a_library_failure_is_one_line_and_the_sweep_goes_on(tmp_path):
    with pytest.raises(PolicyFailed) as e:
        get_policy("lcs:s3fifo").run(reads([0, 1, 2, 0]), 5)
    message = str(e.value)
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith("policy lcs:s3fifo: libCacheSim's S3FIFO failed at capacity 5 (killed by signal 6)")
    assert "Invalid cache size configuration" in message
    # a log so small that S3-FIFO has no room for its small queue at k x L / 8 (6 tokens)
    log = write_synthetic_log(tmp_path / "log", steps=6, layers=3, topk=16, prompt=100)
    res = CliRunner().invoke(cli, ["policies", str(log), "--out", str(tmp_path / "p"),
                                   "--policy", "lcs:s3fifo", "--policy", "streak"])
    assert res.exit_code == 0, res.output
    import pandas as pd

    df = pd.read_parquet(tmp_path / "p" / "policies.parquet")
    s3 = df[df.policy == "lcs:s3fifo"].set_index("capacity_kxl")
    assert s3.hits.isna()[0.125] and "S3FIFO failed at capacity 6" in s3.failure[0.125]
    assert s3.hits.notna()[2.0] and s3.failure[2.0] == ""
    assert "warning: policy lcs:s3fifo: libCacheSim's S3FIFO failed at capacity 6" in res.output


def test_the_trace_is_written_once_per_stream_and_removed_with_it():
    stream = reads([0, 1, 0, 2, 1, 0])
    trace = trace_of(stream)
    assert trace_of(stream) is trace and os.path.getsize(trace.path) == 24 * len(stream)
    records = np.fromfile(trace.path, dtype=np.dtype([("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")]))
    assert records["id"].tolist() == [0, 1, 0, 2, 1, 0] and (records["size"] == 1).all()
    assert records["next"].tolist() == [2, 4, 5] + [np.iinfo(np.int64).max] * 3
    path = trace.path
    del stream, trace
    gc.collect()
    assert not os.path.exists(path)


def test_every_llc_policy_states_its_hardware_cost_with_the_kernels_table_sizes():
    for name, cls in POLICIES.items():
        assert (cls.hardware_cost() is not None) == (name in RESERVED_POLICIES), name
    # the record table and the history table sized as the LLC kernel allocates them
    ref = HardwareReference(sets=64, reserved_ways=4)
    llc = LLCState(LLCConfig.make(64 * 16 * 64, 16, 4, "streak"))
    assert ref.record_slots == len(llc.tkeys) == 2 * ref.records
    assert table_slots(4096) == len(llc.hkeys)
    # a reserved line of a token policy points at a record slot; line LRU needs its stack position
    assert POLICIES["token-lru"].hardware_cost(ref).line_bits == 9 and POLICIES["lru"].hardware_cost(ref).line_bits == 2
    # streak: history entries carry a tag and two step counts; admit: a tag and a count
    streak, admit = POLICIES["streak"].hardware_cost(ref), POLICIES["admit"].hardware_cost(ref)
    assert streak.history_bits == ref.token_id_bits + 2 * ref.step_bits
    assert admit.history_bits == ref.token_id_bits + ref.step_bits
    assert all(POLICIES[n].hardware_cost(ref).history_bits == 0 for n in RESERVED_POLICIES if n not in ("streak", "admit"))


def test_the_families_side_by_side(tmp_path):
    log = write_synthetic_log(tmp_path / "log", steps=8, layers=4, topk=32, prompt=200)
    df = policy_sweep(log, ["streak", "token-lru", "lcs:lru", "lcs:arc", "lcs:s3fifo", "lcs:belady", "min"],
                      fractions=(0.25, 1))
    assert set(df.family) == {"dsa-llc", "libCacheSim"}
    best = family_best(df).set_index("capacity_kxl")
    for f in (0.25, 1):
        zoo = df[(df.capacity_kxl == f) & (df.family == "libCacheSim") & ~df.offline]
        assert best.best_zoo_hit_rate[f] == zoo.hit_rate.max()
        assert best.best_zoo_policy[f] in set(zoo.policy) and best.best_zoo_policy[f] != "lcs:belady"
    sentence, = streak_vs_zoo(df)
    streak = df[(df.policy == "streak") & (df.capacity_kxl == 0.25)].iloc[0]
    assert sentence.startswith(f"{streak.log}: at k x L / 4, streak hits {streak.hit_rate:.1%} of the token reads")
    assert best.best_zoo_policy[0.25] in sentence


def test_the_listing_shows_families_and_state():
    res = CliRunner().invoke(cli, ["policies"])
    assert res.exit_code == 0
    lines = {line.split()[0]: line for line in res.output.splitlines()[1:]}
    assert set(lines) == set(POLICIES)
    assert " libCacheSim " in lines["lcs:arc"] and " dsa-llc " in lines["streak"]
    assert POLICIES["streak"].hardware_cost().summary() in lines["streak"]
    assert lines["layer-quota"].split()[2] == "-"
