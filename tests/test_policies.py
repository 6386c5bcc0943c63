"""Reservation policies: hand-worked sequences, properties against MIN, the cyclic sweep, the
set-associative implementations, and the CLI."""

import inspect
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import GOOD_META, one_error, reads, run, streams, write_raw_log
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cache import hashtab
from harness.cache.llc import RESERVED_POLICIES, LLCConfig, LLCState
from harness.cache.policies import POLICIES, bip, get_policy, ways
from harness.cache.policies.ways import _HOOKS, _source_files
from harness.cli import cli
from harness.core.errors import UserError
from trace_gen.synthetic import write_synthetic_log

OWN = [name for name, cls in POLICIES.items() if cls.family == "dsa-llc"]  # the project's policies
A, B, C, D = 0, 1, 2, 3
X, Y, Z, W = 4, 5, 6, 7
ABACBA = [A, B, A, C, B, A]


@pytest.mark.parametrize("name, capacity, stream, expected", [
    # LRU, 2 slots: A m, B m, A h, C m (evicts B), B m (evicts A), A m (evicts C)
    ("token-lru", 2, reads(ABACBA), 1),
    ("lru", 2, reads(ABACBA), 1),
    # SRRIP: A, B in at RRPV 2; A hit -> 0. C: no RRPV 3, age +1 (B 3, A 1), evict B, C in at 2.
    # B: age +1 (C 3, A 2), evict C, B in at 2. A hits again.
    ("srrip", 2, reads(ABACBA), 2),
    # BRRIP: A, B in at 3; A hit -> 0; C evicts B (3), in at 3; B evicts C (3); A hits.
    ("brrip", 2, reads(ABACBA), 2),
    # BIP: inserts at the LRU end. [A], [A B]; A hit -> [A B]; C evicts B -> [A C];
    # B evicts C -> [A B]; A hits.
    ("bip", 2, reads(ABACBA), 2),
    # LFU-DA: A, B in with K = 1; A hit: K = 2. C evicts B (K 1), L = 1, C in with K = 2.
    # B: A and C both K 2, A least recent -> evicted, L = 2, B in with K 3. A evicts C (K 2).
    ("lfu", 2, reads(ABACBA), 1),
    # admission: C (1 read) is not hotter than LRU B (1 read): not admitted; B, A hit.
    ("admit", 2, reads(ABACBA), 3),
    # MIN: C is never read again: bypassed; B and A hit.
    ("min", 2, reads(ABACBA), 3),
    # quotas, 2 slots, 2 layers. Step 0: A (layer 0), X, Y (layer 1); step 1: A, Z, W.
    # LRU: A m, X m, Y m (evicts A), A m, Z m, W m -> 0 hits. With quotas 1 + 1 (no reuse
    # measured yet) layer 1's tokens evict each other and A survives: 1 hit.
    ("token-lru", 2, reads([A, X, Y, A, Z, W], [0, 1, 1, 0, 1, 1], [0, 0, 0, 1, 1, 1]), 0),
    ("layer-quota", 2, reads([A, X, Y, A, Z, W], [0, 1, 1, 0, 1, 1], [0, 0, 0, 1, 1, 1]), 1),
    # prev-step, 1 slot, k = 1: one layer fits; equal reuse -> layer 0. X (layer 1) finds the
    # cache full with quota 0 for its layer: not cached. A hits at step 1.
    ("prev-step", 1, reads([A, X, A, X], [0, 1, 0, 1], [0, 0, 1, 1]), 1),
    ("token-lru", 1, reads([A, X, A, X], [0, 1, 0, 1], [0, 0, 1, 1]), 0),
    # pin-recent, 2 slots, sinks 1, window 0: position 0 is pinned, so 6 evicts 5 and 7 evicts
    # 6: token 0 hits twice (LRU would evict it once)
    ("pin-recent", 2, reads([0, 5, 6, 0, 7, 0]), 2),
    ("token-lru", 2, reads([0, 5, 6, 0, 7, 0]), 1),
    # streak, 1 slot: A (step 0, streak 1) in; A (step 1, streak 2) hits; B (step 2, streak 1)
    # is weaker than A: not cached; at step 3, A (not read at step 2) dropped to 0 but is still
    # cached: it hits. LRU: A m, A h, B m, A m.
    ("streak", 1, reads([A, A, B, A], steps=[0, 1, 2, 3]), 2),
    ("token-lru", 1, reads([A, A, B, A], steps=[0, 1, 2, 3]), 1),
])
def test_hand_worked_sequences(name, capacity, stream, expected):
    params = {"sinks": 1, "window": 0} if name == "pin-recent" else {}
    assert get_policy(name, **params).run(stream, capacity) == expected


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(1, 24))  # 24: every distinct token of streams()
def test_min_is_never_beaten(stream, capacity):
    best = get_policy("min").run(stream, capacity)
    for name in set(OWN) - {"min"}:  # libCacheSim's algorithms against MIN: tests/test_zoo.py
        assert get_policy(name).run(stream, capacity) <= best, name


@settings(max_examples=100, deadline=None)
@given(streams())
def test_room_for_every_token_means_misses_only_on_first_use(stream):
    distinct = len(np.unique(stream.tid))
    for name in OWN:
        assert get_policy(name).run(stream, distinct) == len(stream) - distinct, name


def test_cyclic_sweep_defeats_lru_but_not_scan_resistant_policies():
    # one step reads every token of every layer (k x L = 300); a reservation of 240 tokens
    # sees the same 300 tokens again 260 tokens later: LRU always evicts the next one needed
    steps, layers, k = 20, 3, 100
    tid = np.tile(np.arange(layers * k), steps)
    stream = reads(tid, np.tile(np.repeat(np.arange(layers), k), steps), np.repeat(np.arange(steps), layers * k),
                   pos=tid % k, topk=k, n_layers=layers)
    capacity = 240
    best = get_policy("min").run(stream, capacity)
    assert best == capacity * (steps - 1)  # MIN keeps 240 tokens and hits them every later step
    for name in ("token-lru", "srrip", "lfu"):
        assert get_policy(name).run(stream, capacity) == 0, name
    assert get_policy("brrip").run(stream, capacity) > 0
    for name in ("bip", "admit", "prev-step", "streak"):
        assert get_policy(name).run(stream, capacity) > 0.75 * best, name


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=400), st.integers(1, 24),
       st.sampled_from([p for p in RESERVED_POLICIES if p != "lru"]))
def test_reserved_ways_of_one_set_equal_the_token_cache(tokens, capacity, name):
    # a one-set LLC whose ways are all reserved is a fully associative cache of one-line tokens
    tokens = [t for i, t in enumerate(tokens) if i == 0 or tokens[i - 1] != t]  # repeats merge reads
    n = len(tokens)
    state = LLCState(LLCConfig.make(capacity * 64, capacity, capacity, name))
    tok = np.asarray(tokens, np.int64)
    out, _, _ = state.access(tok + 1000, np.zeros(n, np.uint8), tok, np.zeros(n, np.uint8))
    assert int(out.sum()) == get_policy(name).run(reads(tokens), capacity)


@pytest.mark.parametrize("name", [p for p in RESERVED_POLICIES if p != "lru"])
@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(1, 24))
def test_one_set_llc_equals_the_token_cache_across_layers_and_steps(name, stream, capacity):
    # the same, on multi-layer, multi-step streams (streak's per-layer demotion and history)
    layer = stream.layer.astype(np.int64)
    tok = (layer << 32) | stream.pos.astype(np.int64)  # trace_gen token ids: layer << 32 | position
    n = len(tok)
    state = LLCState(LLCConfig.make(capacity * 64, capacity, capacity, name))
    out, _, _ = state.access(tok + 1000, np.zeros(n, np.uint8), tok, np.zeros(n, np.uint8),
                             stream.step.astype(np.int64))
    assert int(out.sum()) == get_policy(name).run(stream, capacity)


@pytest.mark.parametrize("name", [p for p in RESERVED_POLICIES if p != "lru"])
@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 12), st.integers(2, 4))
def test_multi_line_tokens_are_one_reference_per_read(name, stream, capacity, lines_per_token):
    # a token read of m lines is one reference: in a one-set LLC of capacity x m ways with
    # whole-token eviction, a token's lines come and go together, so the LLC hits exactly the
    # fully associative policy's token hits, m lines each
    m = lines_per_token
    tok = np.repeat((stream.layer.astype(np.int64) << 32) | stream.pos.astype(np.int64), m)
    lines = tok * 8 + np.tile(np.arange(m), len(stream.tid))
    n = len(tok)
    state = LLCState(LLCConfig.make(capacity * m * 64, capacity * m, capacity * m, name))
    out, _, _ = state.access(lines, np.zeros(n, np.uint8), tok, np.zeros(n, np.uint8),
                             np.repeat(stream.step.astype(np.int64), m))
    assert int(out.sum()) == m * get_policy(name).run(stream, capacity)


def test_unknown_policy_and_bad_parameters():
    with pytest.raises(UserError, match=r"unknown policy 'mru'; did you mean lru\? `dsa-harness policies` lists them"):
        get_policy("mru")
    with pytest.raises(UserError, match="window must be an integer >= 0, got -1"):
        get_policy("pin-recent", window=-1).run(reads(ABACBA), 2)
    with pytest.raises(UserError, match="more than the capacity"):
        get_policy("pin-recent", window=5).run(reads(ABACBA), 2)
    with pytest.raises(UserError, match="unknown parameter"):
        get_policy("bip", window=3)
    with pytest.raises(UserError, match="fully associative token cache only"):
        LLCConfig.make("64KiB", 16, 4, "pin-recent")


def test_policies_cli_lists_and_sweeps(tmp_path):
    res = CliRunner().invoke(cli, ["policies"])
    assert res.exit_code == 0
    for name in POLICIES:
        assert f"\n{name} " in "\n" + res.output
    log = write_synthetic_log(tmp_path / "log", steps=6, layers=3, topk=16, prompt=100)
    res = CliRunner().invoke(cli, ["policies", str(log), "--out", str(tmp_path / "p"), "--policy", "bip",
                                   "--policy", "streak"])
    assert res.exit_code == 0, res.output
    import pandas as pd

    df = pd.read_parquet(tmp_path / "p" / "policies.parquet")
    assert set(df.policy) == {"bip", "streak", "min"} and len(df) == 15
    assert (df[df.policy == "min"].share_of_min == 1).all()
    assert (tmp_path / "p" / "policies.md").read_text().count("| streak | dsa-llc |") == 1
    bad = CliRunner().invoke(cli, ["policies", str(log), "--out", str(tmp_path / "q"), "--param", "pin-recent.window=-2"])
    assert bad.exit_code != 0 and "window must be an integer >= 0" in bad.output and bad.output.count("\n") == 1
    bad = CliRunner().invoke(cli, ["policies", str(log), "--out", str(tmp_path / "q"), "--policy", "nope"])
    assert bad.exit_code != 0 and "`dsa-harness policies` lists them" in bad.output and not (tmp_path / "q").exists()


def test_policies_edge_cases(tmp_path):
    empty = write_raw_log(tmp_path / "empty", rows=[], meta={**GOOD_META, "steps": 0})
    one_error(run("policies", empty, "--out", tmp_path / "p"), "has no rows")
    good = write_raw_log(tmp_path / "good")
    res = run("policies", good, "--out", tmp_path / "q", "--policy", "min")
    assert res.exit_code == 0 and "MIN hits" in res.output, res.output
    one_error(run("policies", good, "--out", tmp_path / "r", "--param", "pin-recent.window=abc"), "window")


@pytest.mark.parametrize("name", ["streak", "admit"])
def test_history_has_room_for_lines_without_a_token_id(name):
    # kv lines with token -1 are tokens of their own: each one adds a history entry, and the
    # history table must grow for them (it used to fill up, and a full table never returns)
    state = LLCState(LLCConfig.make("1MiB", 16, 8, name))
    n = 6000  # more than the first table holds at half load, less than it holds in all
    lines = np.arange(n, dtype=np.int64) * 7
    state.access(lines, np.zeros(n, np.uint8), np.full(n, -1, np.int64), np.zeros(n, np.uint8))
    assert 2 * int((state.hkeys != hashtab.EMPTY).sum()) <= len(state.hkeys)


def test_reserved_ways_are_read_off_the_registry_and_key_the_kernel_cache():
    # a policy runs in the reserved ways when its class has hooks; line LRU keeps no token records
    assert RESERVED_POLICIES == tuple(n for n, cls in POLICIES.items() if cls.reserved_ways is not None)
    assert [n for n in RESERVED_POLICIES if not POLICIES[n].reserved_ways.tokens] == ["lru"]
    # numba's disk cache keys each policy's kernel by its pickled hooks: the policy's name and
    # a hash of the source its hooks compile from, the policy's own module and what it imports
    for name in RESERVED_POLICIES:
        hooks = POLICIES[name].reserved_ways
        assert hooks.name == name and pickle.loads(pickle.dumps(hooks)) is hooks
        assert pickle.dumps(hooks) == pickle.dumps(hooks)
        files = _source_files([getattr(hooks, h) for h in _HOOKS])
        assert inspect.getsourcefile(ways) in files
        assert name == "lru" or inspect.getsourcefile(POLICIES[name]) in files
    assert inspect.getsourcefile(bip) in _source_files([POLICIES["brrip"].reserved_ways.insert])  # BIMODAL_EVERY
