"""The host tier (harness.cache.tier): hot-buffer hits are those of the fully associative token
cache of the same policy and capacity, link bytes are misses x bytes per token, the step time and
the capacity match hand counts; the per-step hits; the spec, the run schema, collect and the
command."""

import json

import numpy as np
import pytest
from helpers import SPEC, run

from harness.cache.policies import TokenReads, get_policy
from harness.cache.tier import (
    TierConfig,
    capacity,
    hot_buffer_hits,
    simulate_tier,
    step_times,
    tier_platform,
)
from harness.cache.timing import TimingConfig
from harness.study.runs import result_problem
from harness.study.spec import loads_spec
from trace_gen.geometry import Geometry, Weights, get_geometry
from trace_gen.indexlog import IndexLog
from trace_gen.synthetic import write_synthetic_log

POLICIES = ("token-lru", "streak", "min", "bip")  # bip: the per-step hits from prefix replays


@pytest.fixture(scope="module")
def reads(tmp_path_factory):
    """2 requests, 12 steps, 3 layers, k = 16 over a 200-token prompt."""
    folder = tmp_path_factory.mktemp("tier") / "log"
    write_synthetic_log(folder, steps=12, layers=3, topk=16, prompt=200, requests=2)
    return TokenReads.from_log(IndexLog(folder))


def _group(reads, keep, request=None) -> TokenReads:
    """The reads where ``keep``, as their own stream of dense ids request * width + position."""
    idx = np.flatnonzero(keep)
    r = np.zeros(len(idx), np.int64) if request is None else request[idx].astype(np.int64)
    return TokenReads((r * reads.width + reads.pos[idx]).astype(np.int32), np.zeros(len(idx), np.int32),
                      r.astype(np.int32), reads.pos[idx], reads.step[idx], reads.ctx[idx], 1,
                      int(r.max()) + 1, reads.topk, reads.width)


@pytest.mark.parametrize("policy", POLICIES)
def test_hot_buffers_are_the_fully_associative_token_cache(reads, policy):
    hot = 24
    per_request = hot_buffer_hits(reads, hot, policy)
    for r in range(reads.requests):
        for layer in range(reads.layers):
            group = _group(reads, (reads.request == r) & (reads.layer == layer))
            assert per_request.hits[r, :, layer].sum() == get_policy(policy).run(group, hot)
            assert per_request.reads[r, :, layer].sum() == len(group)
    pooled = hot_buffer_hits(reads, hot, policy, pooled=True)  # the batch is the log's two requests
    for layer in range(reads.layers):
        group = _group(reads, reads.layer == layer, reads.request)
        assert pooled.hits[0, :, layer].sum() == get_policy(policy).run(group, 2 * hot)


@pytest.mark.parametrize("policy", ("token-lru", "streak"))
def test_step_hits_from_the_hit_mask_equal_the_prefix_replays(reads, policy, monkeypatch):
    """An online policy's hits per step, from its kernel's hit mask and from replays of every
    step's prefix (the generic path), are the same."""
    p = get_policy(policy)
    masked = p.step_hits(reads, 40)
    monkeypatch.setattr(type(p), "fa_hit_mask", lambda self, reads, capacity: None)
    assert masked.tolist() == p.step_hits(reads, 40).tolist()
    assert masked.sum() == p.run(reads, 40)


def test_a_larger_batch_replays_the_log_requests_in_turn(reads):
    h = hot_buffer_hits(reads, 24, "token-lru")
    hits, n = h.per_batch(5)  # requests 0, 1, 0, 1, 0
    assert np.array_equal(hits, 3 * h.hits[0] + 2 * h.hits[1])
    assert np.array_equal(n, 3 * h.reads[0] + 2 * h.reads[1])


def test_link_bytes_are_misses_times_bytes_per_token(reads):
    g = get_geometry("deepseek-v3.2")
    r = simulate_tier(reads, g, TimingConfig.make("h100-sxm"), TierConfig(1.5, "streak"))
    h = hot_buffer_hits(reads, 24, "streak")
    layer_map = g.layer_map(reads.layers)
    misses = (h.reads - h.hits).sum(axis=0)[:, layer_map].sum(axis=1)  # per step, over the 61 layers
    assert r["hot_buffer"]["tokens_per_layer"] == 24
    assert r["link_bytes_per_step_all"] == pytest.approx((misses * 656).tolist())
    assert r["link_bytes_per_step"] == pytest.approx(misses[1:].mean() * 656)  # one warm-up step
    assert r["hot_buffer"]["hits"] + misses[1:].sum() == r["hot_buffer"]["reads"]
    assert all(0 <= x <= 1 for x in r["hot_buffer"]["hit_rate_per_step"])
    assert result_problem(json.loads(json.dumps(r)), "tier") is None


def test_step_time_by_hand():
    """One layer, 64 B per token, HBM 64 B per cycle at 1 GHz with a 10-cycle latency, no compute:
    index 2 x (100 + 1) keys = 202 lines; gather reads 10 tokens, writes 2 new ones and 4 misses;
    the link moves 4 x 64 B at 64 B/us after 1 us."""
    g = Geometry("hand", 1, 64, 64, Weights(0))
    t = TimingConfig.make("h100-sxm", clock_hz=1e9, dram_bytes_per_cycle=64.0, dram_latency_cycles=10)
    p = tier_platform("h100-sxm").with_overrides(link_bytes_per_s=64e6, link_latency_s=1e-6)
    ctx, reads, misses = np.array([100.0]), np.array([[10.0]]), np.array([[4.0]])
    index, gather = (202 + 10) * 1e-9, (10 + 2 + 4 + 10) * 1e-9
    tier = step_times(g, t, p, ctx, reads, misses, 2)
    assert tier.step_s[0] == pytest.approx(index + 1e-6 + 4e-6 + gather)
    assert tier.link_s[0] == pytest.approx(5e-6)
    full = step_times(g, t, p, ctx, reads, None, 2)
    assert full.step_s[0] == pytest.approx(index + (10 + 2 + 10) * 1e-9)


def test_capacity_by_hand():
    """DeepSeek-V3.2 at 16,384 tokens, k = 2048, 4,096 hot tokens on an H100 (80 GB HBM, 250 GB
    of host memory per GPU)."""
    g = get_geometry("deepseek-v3.2")
    cap = capacity(g, tier_platform("h100-sxm"), 16384, 2048, 4096)
    weights = g.weights.resident_bytes()
    assert cap.full_request_bytes == 61 * 16384 * (656 + 132) == 787_546_112
    assert cap.tier_request_bytes == 61 * (16384 * 132 + 4096 * 656) + 2048 * 656 == 297_172_992
    assert cap.host_request_bytes == 61 * 16384 * 656 == 655_622_144
    assert cap.full_max_batch == (80 * 10**9 - weights) // 787_546_112
    assert cap.tier_max_batch == min((80 * 10**9 - weights) // 297_172_992, 250 * 10**9 // 655_622_144)
    assert cap.tier_max_batch == 191  # HBM-bound: (80 GB - 23.1 GB of weights) / 297 MB = 191.5
    assert cap.full_max_batch == 72  # 56.9 GB / 788 MB = 72.3


def test_a_platform_without_a_host_link_is_refused():
    with pytest.raises(Exception, match="no host tier"):
        tier_platform("xeon-8480")


def test_tier_runs_have_a_tier_section_and_no_llc():
    spec = loads_spec(SPEC.replace("[decode]", '[sweep]\nbackend = ["builtin", "tier"]\n\n[decode]')
                      + '\n[tier]\nhot_tokens_per_k = [1.0, 2.0]\nhot_policy = ["token-lru", "min"]\n')
    tier = [r for r in spec.runs if r["backend"] == "tier"]
    builtin = [r for r in spec.runs if r["backend"] == "builtin"]
    assert len(tier) == 4 and len(builtin) == 3  # builtin runs are not multiplied by the tier's grid
    assert all("tier" in r and "llc" not in r for r in tier)
    assert all("tier" not in r and "llc" in r for r in builtin)
    assert [r for r in loads_spec(SPEC).runs] == builtin  # so their ids are those of a spec without it


def test_a_tier_spec_on_a_platform_without_a_link_is_refused():
    with pytest.raises(Exception, match="xeon-8480 has no host tier"):
        loads_spec(SPEC.replace("[decode]", '[sweep]\nbackend = "tier"\n\n[timing]\nplatform = "xeon-8480"\n\n[decode]'))


def test_tier_command(tmp_path):
    write_synthetic_log(tmp_path / "log", steps=6, layers=2, topk=8, prompt=64)
    res = run("tier", "--index-log", str(tmp_path / "log"), "--geometry", "deepseek-v3.2", "--platform", "gh200",
              "--hot-policy", "min", "--format", "json", "--out", str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["hot_buffer"]["policy"] == "min" and r["link"]["name"] == "NVLink-C2C"
    assert json.loads((tmp_path / "r.json").read_text()) == r
    text = run("tier", "--index-log", str(tmp_path / "log"), "--geometry", "deepseek-v3.2", "--pooled")
    assert text.exit_code == 0 and "one pool per layer" in text.output
    bad = run("tier", "--index-log", str(tmp_path / "log"), "--platform", "xeon-8480")
    assert bad.exit_code != 0 and bad.output.count("error:") == 1


def test_a_tier_sweep_reports_its_host_tier_section(tmp_path):
    """A sweep of host-tier runs only: collect gives their columns, and the report has the Host
    tier section (with its plots and table file) and none of the LLC study's."""
    from harness.study.collect import collect
    from harness.study.report import build_report
    from harness.study.sweep import execute

    spec = loads_spec(SPEC.replace("[decode]", '[sweep]\nbackend = "tier"\n\n[decode]')
                      + '\n[tier]\nhot_tokens_per_k = 2.0\nhot_policy = ["token-lru", "streak", "min"]\n')
    assert execute(spec, tmp_path / "sweep", jobs=1, progress=False)["ok"] == 3
    df, bad = collect(tmp_path / "sweep")
    assert not bad and set(df.hot_policy) == {"token-lru", "streak", "min"}
    assert (df.hot_hit_rate <= 1).all() and (df.tier_max_batch >= df.full_max_batch).all()
    build_report(tmp_path / "sweep", tmp_path / "report", policies=False, locality=False)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Host tier: KV in host memory, hot buffers in HBM" in text and "HiSparse" in text
    assert "Does reserving LLC ways" not in text and "## All runs" not in text
    assert (tmp_path / "report" / "host_tier_throughput.png").exists()
    assert (tmp_path / "report" / "host_tier.csv").exists()
