"""Set sampling (harness.core.sampling): the sampled stream is the whole stream's lines in the
sampled sets, those sets end as in full simulation, counts scale to the stream's own, and the
committed error grid (bench/set_sampling.py) meets its targets and still reproduces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cache.llc import LLCConfig, LLCState
from harness.cache.simulate import simulate_stream
from harness.cache.timing import TimingConfig
from harness.core.errors import UserError
from harness.core.sampling import SetSample
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

TABLE = Path(__file__).parent / "data" / "set_sampling" / "errors.csv"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    log = IndexLog(write_synthetic_log(tmp_path_factory.mktemp("sampling") / "log", steps=3, layers=4, topk=64,
                                       prompt=2000, requests=2))
    return StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged", page_tokens=16), batch=3)


def test_a_sample_is_about_one_group_of_sets_in_every_and_counts_its_lines():
    s = SetSample.for_sets(32768, 8)
    assert (s.every, s.group_sets, s.groups) == (8, 64, 512)
    assert SetSample.for_sets(51200, 8).group_sets == 64  # 50 MiB, 16 ways: 2^11 x 25 sets
    assert len(s.sampled_sets) == 32768 // 8 and s.scale == 8  # one group in each run of 8
    sampled = np.zeros(32768, bool)
    sampled[s.sampled_sets] = True
    gaps = np.diff(s.sampled_sets[::64])  # no period: the sampled groups are not evenly spaced
    assert len(set(gaps)) > 3
    for first, count in [(0, 10_000), (1000, 1), (8191, 3), (123_456, 77_777)]:
        lines = np.arange(first, first + count)
        assert s.sampled_lines(first, count) == np.count_nonzero(sampled[lines % 32768])
    with pytest.raises(UserError, match="power of two"):
        SetSample.for_sets(32768, 6)
    with pytest.raises(UserError, match="too small"):
        SetSample.for_sets(100, 8)


def test_the_sampled_stream_is_the_whole_streams_lines_in_the_sampled_sets(src):
    sample = SetSample.for_sets(4096, 4)
    sampled = np.zeros(4096, bool)
    sampled[sample.sampled_sets] = True
    whole = np.concatenate([c.line for c in src.chunks(weight_scans=True) if len(c)])
    kept = np.concatenate([c.line for c in src.chunks(weight_scans=True, sample=sample) if len(c)])
    scans = src.amap.weights_base >> 6  # the weight scans' records stay, whatever the sample
    expect = whole[sampled[whole % 4096] | (whole >= scans)]
    assert np.array_equal(kept, expect)


def test_line_counts_are_the_streams_own(src):
    counts = src.line_counts()
    got = counts.groupby(["phase", "cls"]).lines.sum()
    chunks = [c for c in src.chunks(weight_scans=True) if len(c)]  # a scan record counts its lines
    phase, cls, scan = (np.concatenate([getattr(c, f) for c in chunks]) for f in ("phase", "cls", "scan_lines"))
    lines = np.where(cls == 3, scan, 1)
    want = pd.DataFrame({"phase": phase, "cls": cls, "lines": lines}).groupby(["phase", "cls"]).lines.sum()
    assert got.to_dict() == want.to_dict()


def test_sampled_sets_end_as_in_full_simulation(src):
    """Under line LRU (no token state spans sets) a sampled set sees exactly what it sees in the
    whole cache, weight scans included: its ways end holding the same lines."""
    cfg = LLCConfig.make("4MiB", 16, 0, "lru")
    sample = SetSample.for_sets(cfg.sets, 4)
    full, part = LLCState(cfg, 3), LLCState(cfg, 3, sample)
    for state, s in ((full, None), (part, sample)):
        for c in src.chunks(weight_scans=True, sample=s):  # noqa: B007
            i = np.flatnonzero(c.cls == 3)  # the scans, at once (both flush every set here)
            start = 0
            for j in list(i) + [len(c)]:
                if j > start:
                    state.access(c.line[start:j], c.cls[start:j], c.token[start:j], c.write[start:j],
                                 c.step[start:j], c.phase[start:j], c.request[start:j])
                if j < len(c):
                    assert state.scan(int(c.line[j]), int(c.scan_lines[j]), 0, 0, 0)[1] is None
                start = j + 1
    rows = part.sampled_sets
    assert np.array_equal(full.resident()[rows], part.resident()[rows])
    assert (part.resident()[np.setdiff1d(np.arange(cfg.sets), rows)] == -1).all()


def test_a_sampled_run_says_so_and_scales_to_the_stream(src):
    cfg = LLCConfig.make("4MiB", 16, 4, "token-lru", sample_sets=4)
    r = simulate_stream(src, cfg, TimingConfig.make("h100-sxm"))
    full = simulate_stream(src, LLCConfig.make("4MiB", 16, 4, "token-lru", sample_sets=1), TimingConfig.make("h100-sxm"))
    assert r["sampled_sets"]["every"] == 4 and full["sampled_sets"] is None
    for name in ("kv", "kv_write", "index", "weights"):  # accesses: the stream's own, exactly
        assert r["by_class"][name]["accesses"] == full["by_class"][name]["accesses"]
    assert r["kv_tokens"]["accesses"] == full["kv_tokens"]["accesses"]
    assert r["step_time_cycles"] == pytest.approx(full["step_time_cycles"], rel=0.03)


def test_the_automatic_sample_starts_above_100_m_line_accesses():
    cfg = LLCConfig.make("32MiB", 16)
    assert cfg.sample_for(100_000_000) is None
    assert cfg.sample_for(100_000_001) == SetSample(8, 64, cfg.sets)
    assert LLCConfig.make("32MiB", 16, sample_sets=1).sample_for(10**12) is None


def test_the_committed_error_grid_meets_its_targets():
    df = pd.read_csv(TABLE, keep_default_na=False)
    assert len(df) >= 24 and set(df.geometry) == {"deepseek-v3.2", "native"}
    assert {"lru", "token-lru", "srrip", "brrip", "bip", "lfu", "admit", "streak"} <= set(df.policy)
    knobs = set(df.knobs) - {""}  # the class-aware settings: index ways, streaming, bip, persisting
    assert any("reserve_index" in k for k in knobs) and any("persisting" in k for k in knobs)
    for col in [c for c in df if c.endswith("_error")]:
        assert df[col].abs().median() <= 0.01 and df[col].abs().max() <= 0.03, col
    managed = (df.reserve_ways > 0) | (df.knobs != "")
    decided = df[managed & ((df.speedup_full - 1).abs() > 0.01)]
    assert (np.sign(decided.speedup_full - 1) == np.sign(decided.speedup_sampled - 1)).all()


@pytest.mark.slow
def test_the_committed_error_grid_reproduces(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("set_sampling", Path(__file__).parents[1] / "bench" / "set_sampling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    df = pd.read_csv(TABLE, keep_default_na=False)
    df = df[df.knobs == ""]
    ctx, k, requests, _, _ = bench.POINTS[0]
    logs = {(ctx, k, requests): IndexLog(write_synthetic_log(tmp_path / "log", steps=bench.STEPS, layers=8, topk=k,
                                                             prompt=ctx, requests=requests, seed=ctx))}
    for c in bench.configurations()[:3]:
        row = df[(df.context == c["context"]) & (df.geometry == c["geometry"]) & (df.policy == c["policy"])].iloc[0]
        assert bench.run(c, logs, bench.EVERY)["step_time_cycles"] == pytest.approx(row.step_time_sampled, rel=1e-9)
