"""Hypothesis property tests of the simulator and the token-cache bounds."""

from collections import OrderedDict

import numpy as np
from helpers import line_accesses
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cache.llc import RESERVED_POLICIES, LLCConfig, LLCState
from harness.cache.simulate import simulate
from harness.cache.tokencache import TokenStream, lru_hits, min_hits
from harness.core.accesstrace import LineAccesses
from harness.core.traffic import KV, KV_WRITE, TRAFFIC_CLASSES

SETS, WAYS = 4, 4
KV_BASE = 1 << 20  # kv lines live above this line address, other classes below: class-consistent


@st.composite
def mixed_traces(draw):
    """Line accesses where each address has one class (kv addresses are token lines)."""
    n = draw(st.integers(1, 300))
    out = []
    for _ in range(n):
        if draw(st.booleans()):
            tok = draw(st.integers(0, 12))
            part = draw(st.integers(0, 2))
            cls = draw(st.sampled_from(["kv", "kv_write"]))
            out.append((KV_BASE + tok * 3 + part, cls, tok, draw(st.integers(0, 1))))
        else:
            line = draw(st.integers(0, 40))
            cls = draw(st.sampled_from(["index", "weights", "other"]))
            out.append((line, cls, -1, draw(st.integers(0, 1))))
    return out


configs = st.builds(
    lambda r, pol, whole: LLCConfig.make(SETS * WAYS * 64, WAYS, r, pol, whole),
    st.integers(0, WAYS), st.sampled_from(["lru", "token-lru"]), st.booleans())


@settings(max_examples=150, deadline=None)
@given(mixed_traces(), configs)
def test_counts_add_up_and_partitions_hold(seq, cfg):
    acc = line_accesses(seq)
    state = LLCState(cfg)
    for i in range(len(acc)):  # one access at a time, checking the partition after each
        out, _, _ = state.access(acc.line[i:i + 1], acc.cls[i:i + 1], acc.token[i:i + 1], acc.write[i:i + 1])
        tags = state.resident()
        reserved, shared = tags[:, :cfg.reserve_ways], tags[:, cfg.reserve_ways:]
        assert not ((reserved >= 0) & (reserved < KV_BASE)).any(), "non-kv line in a reserved way"
        if cfg.reserve_ways:
            assert not (shared >= KV_BASE).any(), "kv line in a shared way"
    r = simulate([acc], cfg, bounds=False)
    assert r["hits"] + r["misses"] == r["accesses"] == len(seq)
    for name, c in r["by_class"].items():
        assert c["hits"] + c["misses"] == c["accesses"]
        assert name in TRAFFIC_CLASSES
    assert sum(c["accesses"] for c in r["by_class"].values()) == len(seq)
    t = r["kv_tokens"]
    assert t["full_hits"] + t["partial_hits"] + t["misses"] == t["accesses"]


@st.composite
def token_streams(draw):
    """Whole-token kv reads: token t occupies lines 3t..3t+2 (three lines, three sets)."""
    drawn = draw(st.lists(st.integers(0, 30), min_size=1, max_size=250))
    toks = [t for i, t in enumerate(drawn) if i == 0 or drawn[i - 1] != t]  # repeats would merge reads
    lines = [3 * t + j for t in toks for j in range(3)]
    ids = [t for t in toks for _ in range(3)]
    n = len(lines)
    return LineAccesses(np.array(lines, dtype=np.int64), np.zeros(n, np.uint8),
                        np.full(n, KV, np.uint8), np.array(ids, dtype=np.int64), np.zeros(n, np.int64))


@settings(max_examples=200, deadline=None)
@given(token_streams(), st.integers(1, WAYS), st.sampled_from(["lru", "token-lru"]), st.booleans())
def test_min_never_worse_than_the_set_associative_reservation(acc, r, policy, whole):
    cfg = LLCConfig.make(SETS * WAYS * 64, WAYS, r, policy, whole)
    res = simulate([acc], cfg)
    b, t = res["bounds"], res["kv_tokens"]
    assert b["capacity_tokens"] == SETS * r // 3
    min_misses = b["token_reads"] - b["min_hits"]
    assert min_misses <= t["accesses"] - t["full_hits"]
    assert b["min_hits"] >= b["fa_lru_hits"]


@st.composite
def token_streams_with_writes(draw):
    """Whole-token kv reads and kv_write runs (token t: lines 3t..3t+2), in any order."""
    drawn = draw(st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=200))
    refs = [r for i, r in enumerate(drawn) if i == 0 or drawn[i - 1] != r]  # repeats would merge runs
    lines = [3 * t + j for t, _ in refs for j in range(3)]
    n = len(lines)
    cls = [KV_WRITE if w else KV for _, w in refs for _ in range(3)]
    return LineAccesses(np.array(lines, dtype=np.int64), np.array([c == KV_WRITE for c in cls], np.uint8),
                        np.array(cls, np.uint8), np.array([t for t, _ in refs for _ in range(3)], dtype=np.int64),
                        np.zeros(n, np.int64))


@settings(max_examples=200, deadline=None)
@given(token_streams_with_writes(), st.integers(1, WAYS), st.sampled_from(RESERVED_POLICIES), st.booleans())
def test_min_bounds_the_full_token_hits_of_every_policy(acc, r, policy, whole):
    """The fully associative MIN of the reserved capacity, fed reads and writes, is an upper bound
    on the full token hits of every policy of the reserved ways (simulate's _bounds docstring)."""
    res = simulate([acc], LLCConfig.make(SETS * WAYS * 64, WAYS, r, policy, whole))
    bound = res["bounds"]["min_hits"] if res["bounds"] else 0  # no bounds: no token was read
    assert res["kv_tokens"]["full_hits"] <= bound


def python_lru_hits(tokens, capacity):
    cache, hits = OrderedDict(), 0
    for t in tokens:
        if t in cache:
            hits += 1
            cache.move_to_end(t)
        else:
            if len(cache) == capacity:
                cache.popitem(last=False)
            cache[t] = True
    return hits


def python_min_hits(tokens, capacity):
    """Belady with bypass, by brute force over the future."""
    def next_use(x, i):
        for j in range(i + 1, len(tokens)):
            if tokens[j] == x:
                return j
        return len(tokens) + 1

    cache, hits = set(), 0
    for i, t in enumerate(tokens):
        if t in cache:
            hits += 1
            continue
        if len(cache) < capacity:
            cache.add(t)
            continue
        far = max(cache, key=lambda x: next_use(x, i))  # noqa: B023 (used at once)
        if next_use(t, i) < next_use(far, i):
            cache.remove(far)
            cache.add(t)
    return hits


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-5, 40), max_size=200), st.integers(1, 12))
def test_token_cache_bounds_match_python_models(tokens, capacity):
    with TokenStream.of(np.array(tokens, dtype=np.int64)) as s:
        assert lru_hits(s, capacity) == python_lru_hits(tokens, capacity)
        assert min_hits(s, capacity) == python_min_hits(tokens, capacity)


def test_bounds_across_chunks_and_large_ids():
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 500, 20_000) * (1 << 40) + 3
    whole = TokenStream.of(tokens)
    parts = TokenStream()
    for chunk in np.array_split(tokens, 7):
        parts.append(chunk)
    for cap in (1, 50, 300, 600):
        assert lru_hits(whole, cap) == lru_hits(parts, cap) == python_lru_hits(tokens.tolist(), cap)
        assert min_hits(whole, cap) == min_hits(parts, cap)
    assert whole.distinct == parts.distinct == len(np.unique(tokens))
    whole.close()
    parts.close()


def test_kv_write_lines_use_the_reservation_but_are_not_token_reads():
    acc = line_accesses([(KV_BASE, "kv_write", 1), (KV_BASE, "kv", 1)])
    assert acc.cls.tolist() == [KV_WRITE, KV]
    r = simulate([acc], LLCConfig.make(SETS * WAYS * 64, WAYS, 2, "token-lru"))
    assert r["kv_tokens"] == {"accesses": 1, "full_hits": 1, "partial_hits": 0, "misses": 0,
                              "full_hit_rate": 1.0}
