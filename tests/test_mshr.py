"""MSHR merging in the built-in model (harness.cache.llc, module docstring): a miss whose line's
last primary miss (one that went to memory) lies fewer than W accesses back in the same phase
waits for that fill and reads no memory. Hand-worked streams, the definition checked against the
kernel on random streams under every policy, set sampling, and the timing's use of memory reads."""

import numpy as np
import pytest
from helpers import line_accesses
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cache.llc import RESERVED_POLICIES, LLCConfig, LLCState
from harness.cache.simulate import _scale, simulate
from harness.cache.timing import TimingConfig, phase_cycles, step_time
from harness.core.accesstrace import LineAccesses
from harness.core.sampling import SetSample
from harness.core.traffic import CLASS_CODE, KV, LINE_BYTES, TRAFFIC_CLASSES, WEIGHTS

A, B, C = 0, 1, 2  # on a one-set cache every line shares the set


def run(cfg, seq, window, phases=None, chunk=None):
    """Hit flags, merged counts per class and the state after ``seq`` ([(line, class, token)])
    in the given phases, fed in chunks of ``chunk`` accesses."""
    acc = line_accesses(seq)
    n = len(acc)
    ph = np.zeros(n, np.int64) if phases is None else np.asarray(phases, np.int64)
    state = LLCState(cfg, mshr_window=window)
    hits = []
    step = chunk or max(n, 1)
    for s in range(0, n, step):
        e = s + step
        out, _, _ = state.access(acc.line[s:e], acc.cls[s:e], acc.token[s:e], acc.write[s:e], ph[s:e], ph[s:e])
        hits += out.tolist()
    state.finish()
    return "".join("H" if h else "M" for h in hits), state.by_class[2], state


def reference_merged(hits: str, lines, phases, window: int) -> list[int]:
    """The definition, per access: a miss merges when its line's last primary miss is in the
    same phase and fewer than ``window`` accesses back; a miss that does not merge is a primary.
    It needs no cache state beyond the hit flags (which merging leaves as they are)."""
    last, merged, start = {}, [], 0
    for i, (h, line) in enumerate(zip(hits, lines)):
        if i == 0 or phases[i] != phases[i - 1]:
            start = i
        m = 0
        if h == "M":
            p = last.get(line)
            if p is not None and p >= start and i - p < window:
                m = 1
            else:
                last[line] = i
        merged.append(m)
    return merged


def one_set(ways=2, reserve=0, policy="lru", whole=False):
    return LLCConfig.make(ways * 64, ways, reserve, policy, whole)


def test_a_line_evicted_while_its_fill_is_in_flight_merges_within_the_window():
    # one set, 2 ways, LRU, W = 4 (sequence numbers from 1):
    # 1 A miss (primary), 2 B miss (primary), 3 C miss evicts A (its fill from 1 is in flight),
    # 4 A miss: 4 - 1 = 3 < 4, merged (evicts B, primary 2); 5 B: 5 - 2 = 3, merged (evicts C);
    # 6 C: 6 - 3 = 3, merged (evicts A, whose primary 1 is 5 back: not in flight any more);
    # 7 A: 7 - 1 = 6 >= 4, a primary again; 8 B: 8 - 2 = 6, a primary.
    seq = [(x, "other", -1) for x in (A, B, C, A, B, C, A, B)]
    hits, merged, _ = run(one_set(), seq, 4)
    assert hits == "MMMMMMMM"
    assert merged[CLASS_CODE["other"]] == 3
    assert reference_merged(hits, [s[0] for s in seq], [0] * 8, 4) == [0, 0, 0, 1, 1, 1, 0, 0]


def test_one_in_flight_merges_nothing_and_merging_changes_no_hit_or_miss():
    seq = [(x, "other", -1) for x in (A, B, C, A, B, C, A, B, A, A, C)]
    serial, merged, s1 = run(one_set(), seq, 1)
    assert merged.sum() == 0
    wide, merged, sw = run(one_set(), seq, 4)
    assert wide == serial and merged.sum() > 0
    for key in ("tag", "stamp", "dirty"):
        np.testing.assert_array_equal(getattr(s1, key), getattr(sw, key))
    np.testing.assert_array_equal(s1.by_class[:2], sw.by_class[:2])


def test_nothing_merges_across_a_phase_boundary():
    # the stream above with a new phase from access 4 on: its fills have all returned.
    # 4 A primary (evicts B: primary 2, before the phase), 5 B primary, 6 C primary (evicts A,
    # primary 4: in flight), 7 A merged (7 - 4 = 3), evicts B (primary 5); 8 B merged.
    seq = [(x, "other", -1) for x in (A, B, C, A, B, C, A, B)]
    phases = [0, 0, 0, 1, 1, 1, 1, 1]
    hits, merged, _ = run(one_set(), seq, 4, phases)
    assert merged.sum() == 2
    assert reference_merged(hits, [s[0] for s in seq], phases, 4) == [0, 0, 0, 0, 0, 0, 1, 1]


def test_bypassed_lines_merge_with_their_fill_in_flight():
    # every way reserved for KV: an index line never enters the cache. W = 2: the second access
    # of X merges with the first's fill (2 - 1 = 1), the third (3 - 1 = 2) goes to memory again.
    cfg = LLCConfig.make(2 * 64, 2, 2, "lru", False)
    hits, merged, state = run(cfg, [(7, "index", -1)] * 3, 2)
    assert hits == "MMM" and merged[CLASS_CODE["index"]] == 1
    assert int(state.counters[4]) == 3  # C_BYPASS: all three bypassed


def test_a_hit_under_the_fill_stays_a_hit():
    # the model fills at the miss: A's second access hits (gem5 would count it a miss and an
    # MSHR hit; the memory reads agree), and merges nothing
    hits, merged, _ = run(one_set(), [(A, "other", -1), (A, "other", -1)], 8)
    assert hits == "MH" and merged.sum() == 0


@st.composite
def streams(draw):
    """Mixed streams on a 2-set cache: kv token lines (3 per token) and other lines, in phases."""
    n = draw(st.integers(1, 400))
    out, phases, phase = [], [], 0
    for _ in range(n):
        if draw(st.integers(0, 30)) == 0:
            phase += 1
        if draw(st.booleans()):
            tok = draw(st.integers(0, 10))
            out.append(((1 << 20) + 3 * tok + draw(st.integers(0, 2)), draw(st.sampled_from(["kv", "kv_write"])), tok))
        else:
            out.append((draw(st.integers(0, 25)), draw(st.sampled_from(["index", "other"])), -1))
        phases.append(phase)
    return out, phases


@settings(max_examples=80, deadline=None)
@given(streams(), st.integers(0, 4), st.sampled_from(RESERVED_POLICIES), st.booleans(),
       st.sampled_from([1, 2, 3, 8, 40, 1000]), st.sampled_from([None, 5, 64]))
def test_the_kernel_merges_exactly_the_misses_the_definition_merges(stream, reserve, policy, whole, window, chunk):
    # eviction, whole-token invalidation, bypass and refusal (streak, admit) all make a line
    # leave the cache; the kernel sees them all, in chunks of any size, and changes no hit
    seq, phases = stream
    cfg = LLCConfig.make(2 * 4 * 64, 4, reserve, policy, whole)
    serial, _, s1 = run(cfg, seq, 1, phases, chunk)
    hits, merged, state = run(cfg, seq, window, phases, chunk)
    assert hits == serial
    np.testing.assert_array_equal(state.by_class[:2], s1.by_class[:2])
    assert int(merged.sum()) == sum(reference_merged(hits, [s[0] for s in seq], phases, window))


def test_many_lines_in_flight_grow_the_table_and_stay_exact():
    # a cyclic stream over far more lines than the cache holds, all in one phase: every line is
    # evicted young, and the table must hold thousands at once (it starts with 64 slots)
    rng = np.random.default_rng(3)
    lines = np.concatenate([np.arange(5000), rng.integers(0, 5000, 20000)])
    seq = [(int(x), "other", -1) for x in lines]
    cfg = LLCConfig.make(16 * 4 * 64, 4, 0, "lru", False)
    hits, merged, state = run(cfg, seq, 3000, chunk=4096)
    want = sum(reference_merged(hits, lines.tolist(), [0] * len(lines), 3000))
    assert int(merged.sum()) == want > 1000
    assert len(state.mkeys) > 4096


def test_results_count_merged_misses_and_memory_reads_per_class_and_request():
    seq = [(x, "other", -1) for x in (A, B, C, A, B, C, A, B)]
    acc = line_accesses(seq)
    t = TimingConfig.make("h100-sxm", max_outstanding=4, issue_per_cycle=1, dram_latency_cycles=400)
    assert t.mshr_window == 4
    r = simulate([acc], one_set(), t, bounds=False)
    assert r["mshr_window"] == 4
    assert (r["misses"], r["mshr_merged"], r["memory_reads"]) == (8, 3, 5)
    assert r["by_class"]["other"]["mshr_merged"] == 3 and r["by_class"]["other"]["memory_reads"] == 5
    assert r["by_request"][0]["other"]["mshr_merged"] == 3
    serial = simulate([acc], one_set(), TimingConfig.make("h100-sxm", max_outstanding=1), bounds=False)
    assert (serial["misses"], serial["mshr_merged"], serial["memory_reads"]) == (8, 0, 8)


def test_the_window_is_the_requests_issued_while_one_fill_is_outstanding():
    # min(in flight, issue x unloaded miss latency): h100-sxm 80/cycle x 400 cycles = 32,000
    # against 11,931 in flight; the Xeon 56/cycle x 220 = 12,320 against 2,688; serial: 1
    assert TimingConfig.make("h100-sxm").mshr_window == 11_931
    assert TimingConfig.make("xeon-8480").mshr_window == 2_688
    assert TimingConfig.make("h100-sxm", max_outstanding=256).mshr_window == 256
    assert TimingConfig.make("h100-sxm", issue_per_cycle=0.5).mshr_window == 200
    assert TimingConfig.make("xeon-8480", max_outstanding=1).mshr_window == 1


def test_a_sample_sees_the_window_of_its_share_of_the_sets():
    cfg = LLCConfig.make("32MiB", 16)
    sample = SetSample.for_sets(cfg.sets, 8)
    share = len(sample.sampled_sets) / cfg.sets
    assert LLCState(cfg, sample=sample, mshr_window=11_931).mshr_window == round(11_931 * share)
    assert LLCState(cfg, sample=sample, mshr_window=1).mshr_window == 1
    with pytest.raises(ValueError):
        LLCState(cfg, mshr_window=0)


def test_sampled_merged_misses_scale_like_misses():
    import pandas as pd

    summary = {"by_class": {"kv": {"accesses": 100, "hits": 20, "misses": 80, "hit_rate": 0.2,
                                   "mshr_merged": 10, "memory_reads": 70}},
               "by_request": [{"kv": {"accesses": 100, "hits": 20, "misses": 80, "hit_rate": 0.2,
                                      "mshr_merged": 10, "memory_reads": 70}}],
               "evictions": 0, "token_invalidations": 0, "writebacks": 0, "bypasses": 0,
               "kv_tokens": {"accesses": 0, "full_hits": 0, "partial_hits": 0, "misses": 0}}
    counts = pd.DataFrame({"phase": [0], "hits": [20.0], "misses": [80.0], "merged": [10.0], "writebacks": [0.0],
                           "accesses": [100.0]})
    _scale(summary, counts, 8.0, None)
    kv = summary["by_class"]["kv"]
    assert (kv["misses"], kv["mshr_merged"], kv["memory_reads"]) == (640, 80, 560)
    assert (summary["mshr_merged"], summary["memory_reads"]) == (80, 560)
    assert summary["by_request"][0]["kv"]["mshr_merged"] == 80
    assert (counts.misses[0], counts.merged[0]) == (640, 80)


def test_the_memory_terms_take_memory_reads_not_misses():
    # a bandwidth-bound phase: 1,000 misses of which 400 merged move 600 lines, not 1,000
    t = TimingConfig.make("h100-sxm", max_outstanding=1_000_000, issue_per_cycle=1e6, llc_hit_cycles=10,
                          dram_latency_cycles=100, dram_bytes_per_cycle=64, latency_factor=1.0)
    memory, _ = phase_cycles([0], [1000], [0], [0], t, [400])
    assert memory[0] == pytest.approx(600 * LINE_BYTES / 64 + 100)
    assert phase_cycles([0], [1000], [0], [0], t)[0][0] == pytest.approx(1000 + 100)
    # latency-bound (N = 10): occupancy = (merged x L_h + reads x f L_m) / N + min(n, N) / I
    t = TimingConfig.make("h100-sxm", max_outstanding=10, issue_per_cycle=1, llc_hit_cycles=10,
                          dram_latency_cycles=100, dram_bytes_per_cycle=1e6, latency_factor=1.5)
    memory, _ = phase_cycles([50], [1000], [0], [0], t, [400])
    assert memory[0] == pytest.approx(max(((50 + 400) * 10 + 600 * 150) / 10 + 10, 1049 + 100))
    assert phase_cycles([50], [1000], [0], [0], t)[0][0] == pytest.approx((50 * 10 + 1000 * 150) / 10 + 10)


def test_a_runs_step_time_comes_from_its_memory_reads():
    # the hand stream above as one step's phase: simulate's step time is the model's on its reads
    seq = [(x, "other", -1) for x in (A, B, C, A, B, C, A, B)]
    acc = line_accesses(seq)
    t = TimingConfig.make("h100-sxm", max_outstanding=4, issue_per_cycle=1, dram_latency_cycles=400,
                          dram_bytes_per_cycle=0.5, warmup_steps=0)
    r, counts = simulate([acc], one_set(), t, bounds=False, return_phases=True)
    assert int(counts.merged.sum()) == 3
    expected = phase_cycles([0], [8], [0], [0], t, [3])[0][0]
    assert r["step_time_cycles"] == pytest.approx(expected)
    assert r["step_time_cycles"] < step_time(counts.drop(columns="merged"), t)["step_time_cycles"]


def test_weight_scans_applied_at_once_record_the_young_lines_they_evict():
    # kv lines 100..103 fill a 4-way one-set cache; a weights scan of 5 lines (ways + 1) in the
    # same phase evicts them all, young; reading them again right after merges every one,
    # whether the scan is applied at once or line by line
    kv = [(100 + i, "kv", i) for i in range(4)]
    cfg = LLCConfig.make(4 * 64, 4, 0, "lru", False)

    def go(at_once: bool) -> tuple[int, int]:
        state = LLCState(cfg, mshr_window=64)
        a = line_accesses(kv)
        z = np.zeros(4, np.int64)
        state.access(a.line, a.cls, a.token, a.write, z, z)
        if at_once:
            scanned, left = state.scan(1000, 5, 0, 0, 0)
            assert scanned is not None and left is None  # applied at once in the one set
        else:
            w = LineAccesses(np.arange(1000, 1005, dtype=np.int64), np.zeros(5, np.uint8), np.full(5, WEIGHTS, np.uint8),
                             np.full(5, -1, np.int64), np.zeros(5, np.int64))
            state.access(w.line, w.cls, w.token, w.write, np.zeros(5, np.int64), np.zeros(5, np.int64))
        state.access(a.line, a.cls, a.token, a.write, z, z)
        return int(state.by_class[2, KV]), int(state.by_class[0].sum() - state.by_class[1].sum())

    assert go(True) == go(False) == (4, 13)


def test_the_committed_overlapping_gem5_run_reads_memory_as_the_model_does():
    # tests/data/gem5_step/overlap: 16 requests in flight, 4 issued per cycle. gem5 merges 55
    # misses into outstanding MSHRs; the model at W = min(16, 4 x its miss latency) = 16 merges
    # 15 and counts the other 40 as hits (it fills at the miss), so memory reads agree exactly
    # where the misses alone differ by 40 (the serial run: both 0 merged, counts equal)
    import json

    from test_gem5_step import PHASE_FILE, RUNS, phase_stream

    from harness.gem5.decode_step import step_results
    from harness.gem5.phasefile import read_phase_file
    from harness.gem5.stats import parse_stats

    case = json.loads((RUNS / "overlap" / "case.json").read_text())
    phases = read_phase_file(PHASE_FILE)
    s = phase_stream(phases, case["address_map"])
    ids = np.concatenate([np.full(len(p.lines), i, np.int64) for i, p in enumerate(phases)])
    warm = sum(len(p.lines) for p in phases if not p.measured)
    window = TimingConfig.make("xeon-8480", max_outstanding=case["options"]["max_outstanding"],
                               issue_per_cycle=case["options"]["issue_width"]).mshr_window
    assert window == 16
    state = LLCState(LLCConfig(**case["llc"]), mshr_window=window)
    for part in (slice(0, warm), slice(warm, len(s))):
        before = state.by_class.copy()
        state.access(s.line[part], s.cls[part], s.token[part], s.write[part], s.step[part], ids[part])
    accesses, hits, merged = state.by_class - before
    g = step_results(parse_stats(RUNS / "overlap" / "stats.txt"))
    assert (g["mshr_merged"], int(merged.sum())) == (55, 15)
    assert g["misses"] - int((accesses - hits).sum()) == g["mshr_merged"] - int(merged.sum()) == 40
    assert g["memory_reads"] == int((accesses - hits - merged).sum()) == 2058
    for name, c in g["by_class"].items():
        i = TRAFFIC_CLASSES.index(name)
        assert c["memory_reads"] == accesses[i] - hits[i] - merged[i], name
