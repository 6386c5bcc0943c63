"""The timing models (harness.cache.timing) on worked examples, the platforms, and the phases a
stream reports (trace_gen.stream)."""

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import write_log

from harness.cache.platforms import PLATFORMS, get_platform
from harness.cache.timing import TimingConfig, open_loop_stall, phase_cycles, phase_time, step_time
from harness.cli import cli
from harness.core.errors import UserError
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource

# hit 10 cycles, miss 100, 4 requests in flight, 1 issued per cycle, 64 B per cycle, 10 FLOP/cycle
T = TimingConfig("xeon-8480", "closed-loop", clock_hz=1e9, llc_hit_cycles=10, dram_latency_cycles=100,
                 max_outstanding=4, dram_bytes_per_cycle=64.0, issue_per_cycle=1.0, flops_per_cycle=10.0,
                 bw_efficiency=1.0, warmup_steps=1, overlap=0.0)


@pytest.mark.parametrize("hits,misses,writebacks,expect", [
    # 8 misses through 4 slots: two waves of 100 cycles, plus issuing the first 4
    (0, 8, 0, 8 * 100 / 4 + 4),
    # one miss: its latency, plus the line's transfer at 64 B/cycle
    (0, 1, 0, 100 + 1),
    # 8 hits: 8 x 10 / 4 slot-cycles + the first 4 issued
    (8, 0, 0, 8 * 10 / 4 + 4),
    # nothing to do: no time
    (0, 0, 0, 0),
])
def test_phase_memory_time_by_hand(hits, misses, writebacks, expect):
    memory, compute = phase_cycles([hits], [misses], [writebacks], [0], T)
    assert memory[0] == pytest.approx(expect) and compute[0] == 0


def test_bandwidth_and_issue_bounds_by_hand():
    wide = TimingConfig(**{**T.to_dict(), "max_outstanding": 1000, "issue_per_cycle": 100.0})
    # 1000 misses + 200 writebacks: 1200 lines x 64 B at 64 B/cycle, after the first miss's latency
    memory, _ = phase_cycles([0], [1000], [200], [0], wide)
    assert memory[0] == pytest.approx(1200 + 100)
    # half the bandwidth achieved: twice the transfer time
    half = TimingConfig(**{**wide.to_dict(), "bw_efficiency": 0.5})
    assert phase_cycles([0], [1000], [200], [0], half)[0][0] == pytest.approx(2400 + 100)
    # 50 hits issued 1 per cycle with room for all: the last is issued at 49 and answered at 59
    slow_issue = TimingConfig(**{**T.to_dict(), "max_outstanding": 1000})
    assert phase_cycles([50], [0], [0], [0], slow_issue)[0][0] == pytest.approx(49 + 10)
    # compute: FLOPs / FLOP per cycle
    assert phase_cycles([0], [0], [0], [12_345], T)[1][0] == pytest.approx(1234.5)


def test_step_time_sums_phases_and_skips_the_warmup_step():
    phases = pd.DataFrame({"step": [0, 0, 1, 1], "kind": [0, 1, 0, 1], "hits": [0, 0, 8, 0],
                           "misses": [8, 8, 0, 1], "writebacks": 0, "flops": [0, 100, 0, 100]})
    r = step_time(phases, T, batch=2)
    step1 = (8 * 10 / 4 + 4) + (100 + 1) + 100 / 10
    assert r["steps"] == 2 and r["measured_steps"] == 1
    assert r["step_time_cycles"] == pytest.approx(step1)
    assert r["step_time_cycles_per_step"][1] == pytest.approx(step1)
    assert r["step_time_s"] == pytest.approx(step1 / 1e9)
    assert r["batch_tokens_per_s"] == pytest.approx(2 * r["tokens_per_s"])
    assert r["memory_wait_share"]["index"] == pytest.approx(24 / step1)
    assert r["memory_wait_share"]["gather"] == pytest.approx(101 / step1)
    assert r["phase_cycles"]["gather"]["compute"] == pytest.approx(10)
    assert "closed-loop" in r["timing"]["produced_by"]


@pytest.mark.parametrize("overlap, gather", [(0.0, 101 + 10), (0.5, 101 + 5), (1.0, 101)])
def test_overlap_hides_the_shorter_of_memory_and_compute_in_each_phase(overlap, gather):
    phases = pd.DataFrame({"step": [0, 0, 1, 1], "kind": [0, 1, 0, 1], "hits": [0, 0, 8, 0],
                           "misses": [8, 8, 0, 1], "writebacks": 0, "flops": [0, 100, 0, 100]})
    r = step_time(phases, TimingConfig(**{**T.to_dict(), "overlap": overlap}))
    assert r["step_time_cycles"] == pytest.approx((8 * 10 / 4 + 4) + gather)
    # a compute-bound phase: memory hidden under compute at the roofline
    assert phase_time([10.0], [30.0], 1.0)[0] == 30 and phase_time([10.0], [30.0], 0.0)[0] == 40


def test_open_loop_is_the_old_formula():
    old = TimingConfig(**{**T.to_dict(), "model": "open-loop", "max_outstanding": 32, "dram_latency_cycles": 200,
                          "llc_hit_cycles": 40})
    # 64 misses: 2 waves of 200 cycles; 33 hits: 2 waves of 40 cycles
    assert open_loop_stall([33], [64], [0], old)[0] == 2 * 200 + 2 * 40
    phases = pd.DataFrame({"step": [0, 0], "kind": [0, 1], "hits": [33, 0], "misses": [0, 64],
                           "writebacks": 0, "flops": [1e9, 1e9]})
    r = step_time(phases, TimingConfig(**{**old.to_dict(), "warmup_steps": 0}))
    assert r["step_time_cycles"] == 2 * 200 + 2 * 40 and r["compute_cycles_per_step"] == 0


def test_timing_config_takes_the_platform_and_its_overrides():
    p = get_platform("h100-sxm")
    t = TimingConfig.make("h100-sxm")
    assert (t.llc_hit_cycles, t.dram_latency_cycles, t.max_outstanding) == (p.llc_hit_cycles, p.mem_latency_cycles,
                                                                           p.max_outstanding)
    assert TimingConfig.make("h100-sxm", max_outstanding=64).max_outstanding == 64
    for bad in [dict(max_outstanding=0), dict(dram_bytes_per_cycle=math.nan), dict(llc_hit_cycles="ten"),
                dict(warmup_steps=-1), dict(bw_efficiency=1.5)]:
        with pytest.raises(UserError):
            TimingConfig.make("h100-sxm", **bad)
    with pytest.raises(UserError, match="unknown platform"):
        TimingConfig.make("tpu-v9")
    with pytest.raises(UserError, match="unknown timing model"):
        TimingConfig.make("h100-sxm", model="magic")


@pytest.mark.parametrize("name", list(PLATFORMS))
def test_platforms_are_consistent(name):
    p = PLATFORMS[name]
    assert p.llc_size % (p.llc_ways * 64) == 0
    assert 0 < p.llc_hit_cycles < p.mem_latency_cycles
    assert p.max_outstanding >= 1 and p.issue_per_cycle > 0 and p.peak_flops > 0
    # Little's law: the in-flight requests can sustain at least the peak bandwidth
    assert p.max_outstanding * 64 / p.mem_latency_cycles >= p.mem_bytes_per_cycle * 0.99


def test_unknown_platform_is_one_line(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(10, dtype=np.uint64))
    res = CliRunner().invoke(cli, ["simulate", "--access-trace", str(tmp_path / "a.npy"), "--platform", "tpu-v9"])
    assert res.exit_code != 0 and "unknown platform" in res.output and "Traceback" not in res.output


def test_stream_phases_carry_the_compute_by_hand(tmp_path):
    # 2 requests, 1 step, 1 log layer; request 0 sees 5 tokens and selects 2, request 1 sees 3 and selects 3
    log = IndexLog(write_log(tmp_path / "log", [(0, 0, 0, 5, [0, 3]), (1, 0, 0, 3, [0, 1, 2])],
                             requests=2, steps=1, layers=1, topk=3))
    geo = Geometry("g", layers=2, kv_bytes=100, index_bytes=16, index_flops_per_token=7.0,
                   attn_flops_per_token=11.0, layer_flops=1000.0)
    src = StreamSource(log, geo, Layout(kind="paged", page_tokens=2, weights=True))
    ph = src.phases()
    assert ph[["phase", "step", "layer", "kind"]].values.tolist() == [[0, 0, 0, 0], [1, 0, 0, 1],
                                                                      [2, 0, 1, 0], [3, 0, 1, 1]]
    # index: every cached token of both requests; gather: every selected token, plus the layer once per request
    assert ph.flops.tolist() == [8 * 7.0, 5 * 11.0 + 2 * 1000.0] * 2
    assert ph.attention_flops.tolist() == [8 * 7.0, 5 * 11.0] * 2
    # every access carries the id of its phase, in phase order
    ids = np.concatenate([c.phase for c in src.chunks()])
    assert (np.diff(ids) >= 0).all() and set(ids) == set(ph.phase)
