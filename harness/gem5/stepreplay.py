"""Closed-loop decode steps in gem5: run ``gem5_configs/decode_step.py`` on a phase file
(:mod:`harness.gem5.phasefile`) and read back its statistics and phase table.

The statistics cover the measured phases only (gem5 resets them when the warm-up phases end).
LLC counts come out under the built-in simulator's result keys, per traffic class from the
generator's per-class requestor ids.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.cache.llc import LLCConfig
from harness.core.errors import UserError
from harness.core.traffic import TRAFFIC_CLASSES
from harness.gem5.binary import (
    CONFIG_DIR,
    GEM5_POLICIES,
    check_extension,
    check_llc,
    find_gem5,
    memory_size,
    run_gem5,
)
from harness.gem5.phasefile import PHASE_KINDS, read_phase_results
from harness.gem5.stats import last_dump, llc_results, parse_stats, stat_value

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
    geometry, reservation and policy as the built-in model has them, the KV region and the
    memory size."""
    check_llc(cfg)
    policy = step_policy(cfg)
    a = address_map
    return {"llc_size": f"{cfg.size}B", "llc_assoc": cfg.ways, "reserve_ways": cfg.reserve_ways,
            "policy": policy, "whole_token_eviction": policy != "lru" and cfg.whole_token_eviction,
            "kv_start": a["kv_base"], "kv_end": max(a["kv_end"], a["kv_base"] + 1),
            "token_stride": a["token_stride"], "tokens_per_layer": a["tokens_per_layer"],
            "mem_size": memory_size(a["memory_bytes"])}


def step_command(binary: str, phase_file: Path, options: dict, m5out: Path) -> list[str]:
    """The gem5 command line: ``options`` by config option name (``llc_size`` or ``llc-size``);
    True adds a flag, False and None leave the option out."""
    cmd = [binary, "-d", str(m5out), str(STEP_SCRIPT), "--phases", str(phase_file)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        cmd += [flag] if value is True else [flag, str(value)]
    return cmd


def step_results(stats: pd.DataFrame) -> dict:
    """Result keys from the last dump of a closed-loop run's statistics."""
    last = last_dump(stats)
    accesses = last[(last.stat == f"{LLC}.overallAccesses")]
    requestors = {}
    for name in TRAFFIC_CLASSES:
        sub = f"{GENERATOR.split('.', 1)[1]}.{name}"
        if accesses[accesses.subname == sub].value.sum() > 0:
            requestors[name] = sub
    out = llc_results(last, requestors, LLC)
    tags = f"{LLC}.tags"
    out["bypasses"] = int(stat_value(last, f"{tags}.bypasses"))
    out["bypassed_writes"] = int(stat_value(last, f"{tags}.bypassedWrites"))
    out["token_invalidations"] = int(stat_value(last, f"{tags}.tokenInvalidations"))
    out["demotions"] = int(stat_value(last, f"{tags}.demotions"))
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
