"""Closed-loop decode steps in gem5 (``gem5_configs/decode_step.py``): a stream's batched phases
replayed on a platform's memory system, and read back into the built-in model's result keys.

The phases are the stream's own (trace_gen.stream: per step and layer an index phase for the
whole batch, then a gather phase), written to a phase file (:mod:`harness.gem5.phasefile`), each
followed by the compute delay the built-in model gives it (its FLOPs over the platform's FLOP/s
per cycle), so gem5 and the built-in model time the same work with the same barriers. gem5's
memory is the platform's ``gem5_mem`` DRAM interface with enough channels for the platform's
bandwidth, each given the extra static latency that brings gem5's unloaded miss latency to the
platform's (:func:`platform_options`).

The statistics cover the measured phases only: a run covers the first ``steps`` decode steps of
the log; the first ``timing.warmup_steps`` of them warm the LLC, and gem5 resets its statistics
when the first measured phase starts, exactly as the built-in model leaves them out of its
means (``bench/gem5_steptime.py`` measures the error of a short window against all steps). LLC
counts come out under the built-in simulator's result keys, per traffic class from the
generator's per-class requestor ids.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import __version__
from harness.cache.llc import LLCConfig
from harness.cache.platforms import get_platform
from harness.cache.timing import TimingConfig, step_time
from harness.core.errors import UserError
from harness.core.traffic import TRAFFIC_CLASSES
from harness.gem5.binary import (
    CONFIG_DIR,
    GEM5_POLICIES,
    check_extension,
    check_llc,
    class_options,
    find_gem5,
    memory_size,
    option_flags,
    run_gem5,
)
from harness.gem5.phasefile import PHASE_KINDS, Phase, read_phase_results, write_phase_file
from harness.gem5.stats import last_dump, llc_results, parse_stats, stat_value, tag_results

STEP_SCRIPT = CONFIG_DIR / "decode_step.py"
LLC = "system.llc"
GENERATOR = "system.gen"


@dataclass
class StepReplay:
    """A finished closed-loop run: ``results`` (the built-in simulator's LLC keys, plus the
    token-policy counts, ``step`` timing and ``gem5`` run details), the phase table, every
    statistic of the last dump (``parse_stats``'s long table) and where it ran."""

    results: dict
    phases: pd.DataFrame
    stats: pd.DataFrame
    command: list[str]
    outdir: Path
    wall_seconds: float


def step_policy(cfg: LLCConfig) -> str:
    """The reserved ways' policy as the closed-loop config runs it (UserError if it cannot)."""
    policy = cfg.policy if cfg.reserve_ways else "lru"  # without a reservation every way is LRU
    if policy not in GEM5_POLICIES:
        raise UserError(f"gem5's reserved ways run {', '.join(GEM5_POLICIES)}, not {policy!r}")
    return policy


def llc_options(cfg: LLCConfig, address_map: dict) -> dict:
    """The config options of an LLC and a stream's address map (``AddressMap.describe()``):
    geometry, reservations, policy and hints as the built-in model has them, the classes'
    address regions and the memory size."""
    check_llc(cfg)
    policy = step_policy(cfg)
    a = address_map
    return {"llc_size": f"{cfg.size}B", "llc_assoc": cfg.ways, "reserve_ways": cfg.reserve_ways,
            "policy": policy, "whole_token_eviction": policy != "lru" and cfg.whole_token_eviction,
            "kv_start": a["kv_base"], "kv_end": max(a["kv_end"], a["kv_base"] + 1),
            "token_stride": a["token_stride"], "tokens_per_layer": a["tokens_per_layer"],
            "mem_size": memory_size(a["memory_bytes"])} | class_options(cfg, a)


def step_command(binary: str, phase_file: Path, options: dict, m5out: Path) -> list[str]:
    """The gem5 command line: ``options`` by config option name (``llc_size`` or ``llc-size``);
    True adds a flag, False and None leave the option out."""
    return [binary, "-d", str(m5out), str(STEP_SCRIPT), "--phases", str(phase_file), *option_flags(options)]


def step_results(stats: pd.DataFrame) -> dict:
    """Result keys from the last dump of a closed-loop run's statistics."""
    last = last_dump(stats)
    accesses = last[(last.stat == f"{LLC}.overallAccesses")]
    requestors = {}
    for name in TRAFFIC_CLASSES:
        sub = f"{GENERATOR.split('.', 1)[1]}.{name}"
        if accesses[accesses.subname == sub].value.sum() > 0:
            requestors[name] = sub
    out = llc_results(last, requestors, LLC) | tag_results(last, LLC)
    g = GENERATOR
    out["step"] = {
        "measured_steps": int(stat_value(last, f"{g}.measuredSteps")),
        "measured_ticks": int(stat_value(last, f"{g}.measuredTicks")),
        "ticks_per_step": stat_value(last, f"{g}.ticksPerStep", default=None),
        **{key: {kind: int(stat_value(last, f"{g}.{stat}", kind)) for kind in PHASE_KINDS}
           for key, stat in (("phases", "phases"), ("requests", "requests"),
                             ("mem_wait_ticks", "memWaitTicks"), ("compute_ticks", "computeTicks"))},
    }
    return out


def run_step_replay(binary: str | None, phase_file: str | Path, options: dict,
                    outdir: str | Path | None = None, timeout: float = 3600) -> StepReplay:
    """Replay ``phase_file`` closed-loop in gem5 with the config's ``options`` (see
    ``gem5_configs/decode_step.py --help``); gem5's files go to ``outdir/m5out``, its log to
    ``outdir/gem5.stdout``/``gem5.stderr``. Failures are one-line UserErrors."""
    binary = find_gem5(binary)
    check_extension(binary)
    phase_file = Path(phase_file).resolve()
    if not phase_file.is_file():
        raise UserError(f"phase file {phase_file} does not exist")
    outdir = Path(outdir) if outdir else Path(tempfile.mkdtemp(prefix="dsa-llc-step-"))
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = step_command(binary, phase_file, options, outdir / "m5out")
    wall = run_gem5(cmd, outdir, timeout)
    stats = parse_stats(outdir / "m5out" / "stats.txt")
    phases = read_phase_results(outdir / "m5out")
    results = step_results(stats)
    results["gem5"].update({"wall_seconds": wall, "outdir": str(outdir)})
    return StepReplay(results, phases, last_dump(stats), cmd, outdir, wall)


# --- step time on a platform -------------------------------------------------------------------

PRODUCED_BY = "gem5 closed-loop decode steps (gem5_configs/decode_step.py)"

# gem5's unloaded read latency behind the LLC (ns), per DRAM interface: the miss latency the
# generator sees minus the LLC lookup, measured by bench/gem5_step.py on gem5 v24.0.0.1
# (DDR5_4400_4x8: 72 ns with a 10 ns lookup; HBM_2000_4H_1x64: 73 ns with a 10 ns lookup).
GEM5_DRAM_NS = {"DDR5_4400_4x8": 62.0, "HBM_2000_4H_1x64": 63.0}
# Peak bandwidth of one channel (B/s): gem5's interface parameters (tBURST and burst size):
# DDR5-4400 x32 subchannel 4400 MT/s x 4 B; HBM2 pseudo-channel 2000 MT/s x 8 B.
GEM5_CHANNEL_PEAK = {"DDR5_4400_4x8": 17.6e9, "HBM_2000_4H_1x64": 16.0e9}


def stream_phases(src, timing: TimingConfig, steps: int | None = None) -> list[Phase]:
    """The phases of a stream's first ``steps`` decode steps (all when None) in stream order,
    batched as the stream issues them (all requests of a phase together), each with its
    compute delay in ticks (ps) and warm-up for the first ``timing.warmup_steps`` steps."""
    table = src.phases(steps).set_index("phase")
    parts = [c for c in src.chunks(as_lines=True, steps=steps) if len(c)]
    if not parts:
        raise UserError("the stream is empty: nothing to simulate")
    line, cls, write, phase = (np.concatenate([getattr(c, f) for c in parts]) for f in ("line", "cls", "write", "phase"))
    starts = np.flatnonzero(np.r_[True, phase[1:] != phase[:-1]])
    ends = np.r_[starts[1:], len(line)]
    ids = phase[starts]
    if len(np.unique(ids)) != len(ids) or not np.isin(ids, table.index).all():
        raise UserError("the stream's phases are not contiguous (not a phase-major stream)")
    rows = table.loc[ids]
    period_ps = 1e12 / timing.clock_hz
    compute = np.rint(rows.flops.to_numpy() / timing.flops_per_cycle * period_ps).astype(np.int64)
    first = int(rows.step.iloc[0])
    return [Phase(int(s), int(layer), int(kind), int(s) >= first + timing.warmup_steps, int(c),
                  line[a:b].astype(np.int64), cls[a:b].astype(np.uint8), write[a:b].astype(np.uint8))
            for a, b, s, layer, kind, c in zip(starts, ends, rows.step, rows.layer, rows["kind"], compute)]


def platform_options(timing: TimingConfig) -> dict:
    """decode_step.py's options for a platform's timing values: clock, LLC hit latency,
    requests in flight and issue width, and a memory of the platform's ``gem5_mem`` type with
    the power of two of channels closest to its bandwidth (``dram_bytes_per_cycle``; use
    :func:`gem5_bandwidth_per_cycle` to give the built-in model gem5's), and the extra latency
    that gives its unloaded miss latency (``dram_latency_cycles``, LLC lookup included)."""
    p = get_platform(timing.platform)
    mem_type = p.gem5_mem
    if mem_type not in GEM5_DRAM_NS:
        raise UserError(f"platform {p.name}: no measured gem5 latency for {mem_type} "
                        f"(known: {', '.join(GEM5_DRAM_NS)})")
    clock = timing.clock_hz
    wanted = timing.dram_bytes_per_cycle * clock / GEM5_CHANNEL_PEAK[mem_type]
    channels = 1 << max(0, round(math.log2(wanted)))  # gem5 interleaves a power of two of channels
    extra = (timing.dram_latency_cycles - timing.llc_hit_cycles) / clock * 1e9 - GEM5_DRAM_NS[mem_type]
    if extra < 0:
        raise UserError(f"platform {p.name}: a miss latency of {timing.dram_latency_cycles} cycles is below "
                        f"gem5's {mem_type} ({GEM5_DRAM_NS[mem_type]:g} ns after the LLC lookup)")
    return {"clock": f"{clock / 1e6:g}MHz", "llc_hit_cycles": int(timing.llc_hit_cycles),
            "max_outstanding": int(timing.max_outstanding), "issue_width": math.ceil(timing.issue_per_cycle),
            "mem_type": mem_type, "mem_channels": channels, "mem_extra_latency_ns": round(extra, 3)}


def gem5_bandwidth_per_cycle(timing: TimingConfig) -> float:
    """The peak memory bandwidth (B/cycle) of the gem5 memory :func:`platform_options` builds:
    a power of two of channels, so it differs from the platform's."""
    o = platform_options(timing)
    return o["mem_channels"] * GEM5_CHANNEL_PEAK[o["mem_type"]] / timing.clock_hz


def phase_table(phases: pd.DataFrame, clock_hz: float) -> pd.DataFrame:
    """gem5's measured phases as step_time's input: memory cycles from a phase's start to its
    last response, compute cycles from there to its end."""
    m = phases[phases.measured]
    period_ps = 1e12 / clock_hz
    return pd.DataFrame({"step": m.step.to_numpy(), "kind": np.where(m.kind == "index", 0, 1),
                         "memory_cycles": (m.mem_done_tick - m.start_tick).to_numpy() / period_ps,
                         "compute_cycles": (m.end_tick - m.mem_done_tick).to_numpy() / period_ps})


def check_step_config(cfg: LLCConfig, timing: TimingConfig, steps: int | None) -> None:
    """What the closed-loop config cannot run, before any work (one-line UserErrors)."""
    step_policy(cfg)
    if timing.warmup_steps and steps is not None and steps <= timing.warmup_steps:
        raise UserError(f"--steps {steps} leaves no measured step after {timing.warmup_steps} warm-up step(s)")
    platform_options(timing)


def simulate_step_gem5(src, cfg: LLCConfig, timing: TimingConfig, binary: str | None = None,
                       outdir: str | Path | None = None, steps: int | None = None, timeout: float = 3600,
                       extra_config: dict | None = None, options: dict | None = None) -> dict:
    """One closed-loop gem5 run of a stream's first ``steps`` decode steps: the built-in
    simulator's LLC result keys (line counts per class, evictions, writebacks), the step-time
    keys of :func:`harness.cache.timing.step_time` from gem5's measured phases, and ``gem5``
    run details. ``options`` override decode_step.py options (e.g. ``mem_channels``).

    gem5 runs the step's attention part: a stream's weights are left out (``step_scope``
    ``attention``). A decode step's weights are hundreds of millions of line requests, far beyond
    gem5's reach here, and the built-in model applies their scans exactly
    (harness.cache.simulate)."""
    check_step_config(cfg, timing, steps)
    src = src.without_weights()
    opts = llc_options(cfg, src.amap.describe()) | platform_options(timing) | (options or {})
    folder = Path(outdir) if outdir else Path(tempfile.mkdtemp(prefix="dsa-llc-step-"))
    folder.mkdir(parents=True, exist_ok=True)
    phase_file = folder / "stream.phases"
    counts = write_phase_file(phase_file, stream_phases(src, timing, steps))
    run = run_step_replay(binary, phase_file, opts, folder, timeout)
    result = run.results
    # gem5 runs a phase's compute after its last response: its phase time is the sum (overlap 0)
    t = TimingConfig(**{**timing.to_dict(), "warmup_steps": 0, "overlap": 0.0})
    result.update(step_time(phase_table(run.phases, timing.clock_hz), t, src.batch, PRODUCED_BY))
    result["steps"] = int(run.phases.step.nunique())  # warm-up steps included; the means leave them out
    result["step_scope"] = "attention"
    result["batch"] = src.batch
    result["gem5"].update({"phases": counts["phases"], "requests": counts["requests"],
                           "options": opts, "command": run.command})
    result["config"] = {"llc": cfg.to_dict(), "timing": timing.to_dict(), "backend": "gem5",
                        "gem5_model": "closed-loop", "gem5_binary": run.command[0], "steps": steps,
                        **(extra_config or {})}
    result["version"] = __version__
    return result
