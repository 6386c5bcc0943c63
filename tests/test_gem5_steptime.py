"""The built-in decode-step time against gem5's closed-loop decode steps: the committed validation
runs (tests/data/gem5_steptime, written by bench/gem5_steptime.py) re-checked without gem5, and,
with a gem5 binary, one of them run again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.cache.calibration import load as load_calibration
from harness.cache.timing import TimingConfig, step_time
from harness.gem5.decode_step import phase_table, step_results
from harness.gem5.phasefile import read_phase_results
from harness.gem5.stats import parse_stats
from harness.gem5.validation import (
    UNCALIBRATED,
    config_id,
    errors,
    model_time,
    speedups,
    timing_for,
)

DATA = Path(__file__).parent / "data" / "gem5_steptime"
LOGS = {p.name: str(p) for p in (DATA / "logs").iterdir()}
SUMMARIES = {p.parent.name: json.loads(p.read_text()) for p in sorted(DATA.glob("*/summary.json"))}
CASES = [(platform, c) for platform, s in SUMMARIES.items() for c in s["configs"]]


def _result(platform: str, c: dict) -> dict:
    return json.loads((DATA / platform / "runs" / config_id(c) / "result.json").read_text())


@pytest.mark.parametrize(("platform", "c"), CASES, ids=[f"{p}-{config_id(c)}" for p, c in CASES])
def test_committed_gem5_runs_parse_back_to_their_results(platform, c):
    # gem5's own outputs (phases.csv, the LLC and generator stats) give the recorded result
    folder, r = DATA / platform / "runs" / config_id(c), _result(platform, c)
    steps = SUMMARIES[platform]["validation"]["steps"]
    t = TimingConfig(**{**timing_for(c, platform).to_dict(), "warmup_steps": 0})
    batch = json.loads((Path(LOGS[c["log"]]) / "metadata.json").read_text())["requests"]
    timed = step_time(phase_table(read_phase_results(folder), t.clock_hz), t, batch)
    assert timed["step_time_cycles"] == pytest.approx(r["step_time_cycles"], rel=1e-12)
    assert timed["measured_steps"] == r["measured_steps"] == steps - 1
    counts = step_results(parse_stats(folder / "stats.txt"))
    assert (counts["hits"], counts["misses"], counts["evictions"]) == (r["hits"], r["misses"], r["evictions"])
    assert counts["step"]["measured_steps"] == steps - 1


def _check_model(platform: str, indices: list[int]) -> None:
    summary = SUMMARIES[platform]
    steps, cal = summary["validation"]["steps"], summary["calibration"]
    for i in indices:
        c = summary["configs"][i]
        assert model_time(LOGS, c, platform, steps, UNCALIBRATED) == pytest.approx(summary["builtin_uncalibrated"][i], rel=1e-9)
        assert model_time(LOGS, c, platform, steps, cal) == pytest.approx(summary["builtin_calibrated"][i], rel=1e-9)
        assert _result(platform, c)["step_time_cycles"] == summary["gem5"][i]


@pytest.mark.parametrize("platform", SUMMARIES)
def test_builtin_model_reproduces_the_validation_table_on_a_sample(platform):
    # one configuration per log and geometry: the built-in model still gives the validated times
    seen, sample = set(), []
    for i, c in enumerate(SUMMARIES[platform]["configs"]):
        if (c["log"], c["geometry"]) not in seen:
            seen.add((c["log"], c["geometry"]))
            sample.append(i)
    _check_model(platform, sample)


@pytest.mark.slow
@pytest.mark.parametrize("platform", SUMMARIES)
def test_builtin_model_reproduces_the_whole_validation_table(platform):
    _check_model(platform, list(range(len(SUMMARIES[platform]["configs"]))))


@pytest.mark.parametrize("platform", SUMMARIES)
def test_calibration_file_holds_the_validated_parameters_and_their_error(platform):
    # what harness.cache.calibration applies to the platform, and the error the report quotes,
    # are the fit and the held-out error of the committed runs
    summary = SUMMARIES[platform]
    entry = load_calibration()[platform]
    assert entry["parameters"] == summary["calibration"]
    v = summary["validation"]
    assert entry["validation"] == v
    held_out = list(range(1, len(summary["configs"]), 2))
    e = np.abs(errors(np.array(summary["gem5"])[held_out], np.array(summary["builtin_calibrated"])[held_out]))
    assert v["configurations"] == len(held_out)
    assert v["median_abs_error"] == pytest.approx(float(np.median(e)))
    assert v["max_abs_error"] == pytest.approx(float(e.max()))
    s_g = speedups(summary["configs"], summary["gem5"])
    s_b = speedups(summary["configs"], summary["builtin_calibrated"])
    d = np.abs([s_b[i] / s_g[i] - 1 for i in s_g])
    assert v["speedup_max_abs_difference"] == pytest.approx(float(d.max()))
    assert v["speedups_other_side"] == sum((s_b[i] - 1) * (s_g[i] - 1) < 0 for i in s_g)


@pytest.mark.parametrize("platform", SUMMARIES)
def test_calibrated_platform_times_with_the_fitted_parameters(platform):
    from harness.cache.platforms import get_platform

    p, cal = get_platform(platform), SUMMARIES[platform]["calibration"]
    assert (p.bw_efficiency, p.latency_factor) == (cal["bw_efficiency"], cal["latency_factor"])
    assert TimingConfig.make(platform).latency_factor == p.latency_factor


@pytest.mark.gem5
def test_gem5_reproduces_a_committed_validation_run(gem5_binary, tmp_path):
    from harness.gem5.decode_step import simulate_step_gem5
    from harness.gem5.validation import llc_for, source

    platform = "xeon-8480"
    c = next(c for c in SUMMARIES[platform]["configs"] if c["policy"] == "streak" and c["log"].endswith("b4"))
    r = simulate_step_gem5(source(LOGS, c), llc_for(c), timing_for(c, platform), gem5_binary, tmp_path,
                           SUMMARIES[platform]["validation"]["steps"])
    committed = _result(platform, c)
    assert r["step_time_cycles"] == committed["step_time_cycles"]
    assert (r["hits"], r["misses"], r["evictions"]) == (committed["hits"], committed["misses"], committed["evictions"])


def test_stream_phases_are_the_streams_batched_phases_with_their_compute():
    from harness.core.traffic import INDEX
    from harness.gem5.decode_step import stream_phases
    from harness.gem5.validation import STREAM
    from trace_gen.stream import StreamSource

    src = StreamSource.from_options(LOGS["smollm2-b4"], {"geometry": "deepseek-v3.2", **STREAM})
    t = TimingConfig.make("xeon-8480")
    phases, table = stream_phases(src, t, 2), src.phases(2)
    assert [(p.step, p.layer, p.kind) for p in phases] == list(zip(table.step, table.layer, table["kind"]))
    assert sum(len(p.lines) for p in phases) == sum(len(c) for c in src.chunks(steps=2))
    assert [p.measured for p in phases] == [s >= 1 for s in table.step]  # one warm-up step
    ticks = table.flops.to_numpy() / t.flops_per_cycle * 1e12 / t.clock_hz
    np.testing.assert_allclose([p.compute_ticks for p in phases], ticks, atol=0.5)
    index = phases[0]
    assert index.kind == 0 and (index.cls == INDEX).all()
    # batched: the index phase scans every request's keys (4 requests x 2,049+ tokens x 132 B)
    assert len(index.lines) >= 4 * 2049 * 132 // 64


def test_platform_options_give_gem5_the_platforms_latency_and_bandwidth():
    from harness.gem5.decode_step import (
        GEM5_CHANNEL_PEAK,
        gem5_bandwidth_per_cycle,
        platform_options,
    )

    x = platform_options(TimingConfig.make("xeon-8480"))
    # 307.2 GB/s over 17.6 GB/s channels: 16 (a power of two); 110 ns - 33 ns lookup - 62 ns
    assert (x["mem_type"], x["mem_channels"], x["mem_extra_latency_ns"]) == ("DDR5_4400_4x8", 16, 15.0)
    assert (x["llc_hit_cycles"], x["clock"]) == (66, "2000MHz")
    h = platform_options(TimingConfig.make("h100-sxm", max_outstanding=256))
    assert (h["mem_type"], h["mem_channels"], h["max_outstanding"]) == ("HBM_2000_4H_1x64", 256, 256)
    assert h["mem_extra_latency_ns"] == pytest.approx(200 / 1.755 - 63, abs=1e-3)
    assert gem5_bandwidth_per_cycle(TimingConfig.make("xeon-8480")) == 16 * GEM5_CHANNEL_PEAK["DDR5_4400_4x8"] / 2e9


@pytest.mark.gem5
def test_simulate_backend_gem5_prints_the_step_time_keys(gem5_binary, tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    args = ["simulate", "--index-log", LOGS["smollm2"], "--geometry", "deepseek-v3.2", "--platform", "xeon-8480",
            "--llc-size", "8MiB", "--ways", "16", "--reserve-ways", "4", "--policy", "streak",
            "--max-outstanding", "64", "--steps", "2", "--format", "json"]
    built = json.loads(CliRunner().invoke(cli, args, catch_exceptions=False).output)
    run = CliRunner().invoke(cli, args + ["--backend", "gem5", "--gem5", gem5_binary, "--gem5-out", str(tmp_path / "g")],
                             catch_exceptions=False)
    g = json.loads(run.output)
    for key in ("step_time_cycles", "step_time_s", "tokens_per_s", "batch_tokens_per_s", "memory_cycles_per_step",
                "compute_cycles_per_step", "memory_wait_share", "phase_cycles", "by_class"):
        assert key in g and key in built
    assert g["timing"]["produced_by"].startswith("gem5 closed-loop")
    assert built["timing"]["produced_by"].startswith("built-in")
    assert g["measured_steps"] == built["measured_steps"] == 1
    assert 0.5 < built["step_time_cycles"] / g["step_time_cycles"] < 2
