"""Decode-step time from the LLC's hits and misses: the closed-loop phase model (the default) and
the older open-loop formula.

**closed-loop** (per phase of a decode step; trace_gen.stream defines the phases: per layer an
index phase, then a gather phase that depends on it, each followed by compute). A phase issues
its n = H + M line requests (H LLC hits, M misses, bypasses included) at most ``issue_per_cycle``
per cycle with at most N = ``max_outstanding`` in flight, and ends when the last one is answered;
its B dirty writebacks share the memory bandwidth. Of the misses, G are MSHR-merged (they find
their line's fill still in flight and wait for it: harness.cache.llc, MSHR merging) and
R = M - G read memory. With L_h = ``llc_hit_cycles``, L_m = ``dram_latency_cycles``, W =
``dram_bytes_per_cycle`` x ``bw_efficiency`` and I = ``issue_per_cycle``, f = ``latency_factor``
(a miss's latency under load over its unloaded latency), L the latency of the slowest request
present (L_m if M > 0, else L_h):

    occupancy = ((H + G) L_h + R f L_m) / N + min(n, N) / I   every request holds a slot for its latency
    issue     = (n - 1) / I + L                                the last request issued, then answered
    bandwidth = (R + B) x 64 / W + L_m   (if R + B > 0)        the data transfer, after the first miss
    memory    = max(occupancy, issue, bandwidth)
    compute   = FLOPs of the phase / (peak FLOP/s / clock)

A merged miss adds no memory traffic and no loaded memory latency: its wait for the fill lies
within the primary miss's, which the occupancy already counts; it holds its slot at least for
the lookup (L_h) that finds the MSHR. The merging window (:attr:`TimingConfig.mshr_window`) is
the number of line requests issued while one fill is outstanding: at most N (the fill holds one
of N slots, and with misses dominating the others turn over no faster) and at most I x L_m (the
issue rate over the unloaded miss latency), W_mshr = min(N, ceil(I x L_m)); 1 in a serial run,
where nothing merges. With no merged misses (G = 0) the model is the one without merging.

Phases run one after another (a barrier between them: the gather needs the top-k, the next layer
needs this one), so a step's time is the sum of its phases' memory and compute time. Means are
taken over the steps after the first ``warmup_steps`` (the LLC starts cold). A stream without
phases (a generic access trace) is one memory phase per step with no compute.

**open-loop** (the first-order formula of earlier versions; memory stall only, per step, no
phases, no compute):

    stall = max(ceil(M / N) x L_m, (R + B) x 64 / W) + ceil(H / N) x L_h

gem5 (gem5_configs/decode_step.py) runs the same phases cycle by cycle; bench/gem5_steptime.py
measures this model's error against it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from harness.cache.platforms import DEFAULT_PLATFORM, get_platform
from harness.core.errors import UserError
from harness.core.settings import default
from harness.core.traffic import LINE_BYTES

TIMING_MODELS = ("closed-loop", "open-loop")
PHASE_NAMES = {0: "index", 1: "gather", -1: "step"}  # -1: a generic trace's one phase per step


@dataclass(frozen=True)
class TimingConfig:
    """A platform's timing values after overrides, and the model that uses them."""

    platform: str = DEFAULT_PLATFORM
    model: str = default("timing", "model")
    clock_hz: float = 0.0
    llc_hit_cycles: int = 0
    dram_latency_cycles: int = 0
    max_outstanding: int = 0
    dram_bytes_per_cycle: float = 0.0
    issue_per_cycle: float = 0.0
    flops_per_cycle: float = 0.0
    bw_efficiency: float = 1.0
    latency_factor: float = 1.0
    warmup_steps: int = 1
    overlap: float = 1.0  # share of the shorter of a phase's memory and compute hidden under the longer

    @classmethod
    def make(cls, platform: str = DEFAULT_PLATFORM, model: str = default("timing", "model"), **overrides) -> TimingConfig:
        """The platform's values, each replaced by an override that is not None."""
        p = get_platform(platform)
        values = {"clock_hz": p.clock_hz, "llc_hit_cycles": p.llc_hit_cycles,
                  "dram_latency_cycles": p.mem_latency_cycles, "max_outstanding": p.max_outstanding,
                  "dram_bytes_per_cycle": p.mem_bytes_per_cycle, "issue_per_cycle": p.issue_per_cycle,
                  "flops_per_cycle": p.flops_per_cycle, "bw_efficiency": p.bw_efficiency,
                  "latency_factor": p.latency_factor, "warmup_steps": 1, "overlap": p.overlap}
        unknown = set(overrides) - set(values)
        if unknown:
            raise UserError(f"unknown timing parameter(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        t = cls(platform, model, **values)
        t.validate()
        return t

    def validate(self) -> None:
        if self.model not in TIMING_MODELS:
            raise UserError(f"unknown timing model {self.model!r}; known: {', '.join(TIMING_MODELS)}")
        get_platform(self.platform)
        for name, value in asdict(self).items():
            if name in ("platform", "model"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"timing parameter {name} must be a finite number, got {value!r}")
            if name == "warmup_steps":
                if value < 0 or value != int(value):
                    raise UserError(f"timing parameter warmup_steps must be a whole number >= 0, got {value}")
            elif name == "overlap":
                if value < 0:
                    raise UserError(f"timing parameter overlap must be at least 0, got {value}")
            elif value <= 0:
                raise UserError(f"timing parameter {name} must be positive, got {value}")
        if self.bw_efficiency > 1:
            raise UserError(f"timing parameter bw_efficiency must be at most 1, got {self.bw_efficiency}")
        if self.overlap > 1:
            raise UserError(f"timing parameter overlap must be at most 1, got {self.overlap}")
        if self.latency_factor < 1:
            raise UserError(f"timing parameter latency_factor must be at least 1, got {self.latency_factor}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mshr_window(self) -> int:
        """Line requests issued while one fill is outstanding, within a phase (whose accesses
        issue together): min(in-flight limit, issue rate x unloaded miss latency), at least 1.
        A miss within this many accesses of its line's last primary miss merges with it
        (harness.cache.llc, MSHR merging). 1 with one request in flight: nothing merges."""
        return max(1, min(int(self.max_outstanding), math.ceil(self.issue_per_cycle * self.dram_latency_cycles)))


def phase_cycles(hits, misses, writebacks, flops, t: TimingConfig, merged=0) -> tuple[np.ndarray, np.ndarray]:
    """Memory and compute cycles of each phase (arrays of per-phase counts; closed-loop model).
    ``merged``: the misses that waited for a fill in flight (MSHR merging), which read no
    memory: memory reads = misses - merged feed the occupancy's miss latency and the bandwidth."""
    h, m, b, f = (np.asarray(a, dtype=np.float64) for a in (hits, misses, writebacks, flops))
    g = np.broadcast_to(np.asarray(merged, dtype=np.float64), m.shape)
    reads = m - g
    n = h + m
    slowest = np.where(m > 0, t.dram_latency_cycles, np.where(h > 0, t.llc_hit_cycles, 0.0))
    issue_rate = t.issue_per_cycle
    loaded = t.dram_latency_cycles * t.latency_factor  # a miss's latency while the memory is busy
    occupancy = ((h + g) * t.llc_hit_cycles + reads * loaded) / t.max_outstanding \
        + np.minimum(n, t.max_outstanding) / issue_rate
    issue = np.maximum(n - 1, 0) / issue_rate + slowest
    traffic = reads + b
    bandwidth = np.where(traffic > 0, traffic * LINE_BYTES / (t.dram_bytes_per_cycle * t.bw_efficiency)
                         + t.dram_latency_cycles, 0.0)
    memory = np.where(n > 0, np.maximum(np.maximum(occupancy, issue), bandwidth), 0.0)
    return memory, f / t.flops_per_cycle


def phase_time(memory, compute, overlap: float):
    """A phase's cycles: its memory and compute time, with ``overlap`` of the shorter hidden
    under the longer. 1 is the roofline (the larger of the two: a kernel that streams its operands
    while it computes); 0 the sum (compute starts when the last operand has arrived, as gem5's
    closed loop runs a phase). Real kernels sit between."""
    memory, compute = np.asarray(memory, dtype=np.float64), np.asarray(compute, dtype=np.float64)
    return memory + compute - overlap * np.minimum(memory, compute)


def open_loop_stall(hits, misses, writebacks, t: TimingConfig, merged=0) -> np.ndarray:
    """Stall cycles of each step under the open-loop formula (arrays of per-step counts);
    ``merged`` misses (MSHR merging) wait like misses but move no data."""
    h, m, b = (np.asarray(a, dtype=np.float64) for a in (hits, misses, writebacks))
    reads = m - np.broadcast_to(np.asarray(merged, dtype=np.float64), m.shape)
    latency = np.ceil(m / t.max_outstanding) * t.dram_latency_cycles
    bandwidth = (reads + b) * LINE_BYTES / (t.dram_bytes_per_cycle * t.bw_efficiency)
    return np.maximum(latency, bandwidth) + np.ceil(h / t.max_outstanding) * t.llc_hit_cycles


def step_time(phases, t: TimingConfig, batch: int = 1, produced_by: str = "") -> dict:
    """Step-time result keys from a table of phases in stream order with columns ``step``,
    ``kind`` (0 index, 1 gather, -1 a generic trace's step), and either ``memory_cycles`` and
    ``compute_cycles`` (measured, e.g. by gem5) or ``hits``, ``misses``, ``writebacks`` and
    ``flops`` (then ``t.model`` computes them), with ``merged`` (MSHR-merged misses) if any."""
    import pandas as pd

    if phases.empty:
        return {"steps": 0, "measured_steps": 0, "step_time_cycles": None, "timing": _provenance(t, produced_by)}
    phases = phases.copy()
    if "memory_cycles" not in phases:
        if "merged" not in phases:
            phases["merged"] = 0
        if t.model == "closed-loop":
            phases["memory_cycles"], phases["compute_cycles"] = phase_cycles(
                phases.hits, phases.misses, phases.writebacks, phases.flops, t, phases.merged)
        else:
            per_step = phases.groupby("step", sort=True)[["hits", "misses", "writebacks", "merged"]].sum()
            stall = pd.Series(open_loop_stall(per_step.hits, per_step.misses, per_step.writebacks, t,
                                              per_step.merged), index=per_step.index)
            phases = per_step.reset_index().assign(kind=-1, memory_cycles=stall.to_numpy(), compute_cycles=0.0)
    phases["cycles"] = phase_time(phases.memory_cycles.to_numpy(), phases.compute_cycles.to_numpy(), t.overlap)
    steps = phases.groupby("step", sort=True)[["memory_cycles", "compute_cycles", "cycles"]].sum()
    total = steps.cycles
    warm = min(int(t.warmup_steps), max(len(steps) - 1, 0))
    measured = steps.index[warm:]
    mean = float(total.loc[measured].mean())
    seconds = mean / t.clock_hz
    kinds = phases[phases.step.isin(measured)].groupby("kind")[["memory_cycles", "compute_cycles"]].sum() \
        / len(measured)
    attention = _attention_part(phases, t, measured)
    return {
        "steps": int(len(steps)), "measured_steps": int(len(measured)),
        "step_time_cycles": mean, "step_time_cycles_per_step": [float(x) for x in total],
        "step_time_s": seconds, "tokens_per_s": 1 / seconds if seconds > 0 else None,
        "batch_tokens_per_s": batch / seconds if seconds > 0 else None,
        "memory_cycles_per_step": float(steps.memory_cycles.loc[measured].mean()),
        "compute_cycles_per_step": float(steps.compute_cycles.loc[measured].mean()),
        "phase_cycles": {PHASE_NAMES[int(k)]: {"memory": float(r.memory_cycles), "compute": float(r.compute_cycles)}
                         for k, r in kinds.iterrows()},
        "memory_wait_share": {PHASE_NAMES[int(k)]: float(r.memory_cycles / mean) if mean else None
                              for k, r in kinds.iterrows()},
        "step_scope": attention["scope"],
        "attention_time_cycles": attention["cycles"],
        "attention_share": attention["cycles"] / mean if attention["cycles"] is not None and mean else None,
        "timing": _provenance(t, produced_by),
    }


def _attention_part(phases, t: TimingConfig, measured) -> dict:
    """The step's scope and its attention part. A stream with weights is the whole step
    (``whole``), one without them the step without the weights' traffic (``attention``). The
    attention part is the time of the same phases without the weights' line requests (and the
    writebacks their scans caused) and with only the indexer's and the sparse attention's FLOPs:
    what the KV and indexer traffic and compute cost, in the LLC state the step leaves them
    (weights included). Known for streams from index logs whose weights, if any, came as scans
    (harness.cache.simulate)."""
    weighted = "weights_misses" in phases and bool((phases.weights_misses + phases.weights_hits).sum() > 0)
    scope = "whole" if weighted else "attention" if "attention_flops" in phases else "trace"
    if scope == "trace" or t.model != "closed-loop" or "hits" not in phases:
        return {"scope": scope, "cycles": None}
    less = {k: phases[f"weights_{k}"] if weighted else 0 for k in ("hits", "misses", "writebacks")}
    memory, compute = phase_cycles(phases.hits - less["hits"], phases.misses - less["misses"],
                                   phases.writebacks - less["writebacks"], phases.attention_flops, t,
                                   phases.merged if "merged" in phases else 0)
    part = phases.assign(attention=phase_time(memory, compute, t.overlap))
    per_step = part.groupby("step", sort=True).attention.sum()
    return {"scope": "whole" if weighted else "attention", "cycles": float(per_step.loc[measured].mean())}


def _provenance(t: TimingConfig, produced_by: str) -> dict:
    return {"model": t.model, "platform": t.platform, "produced_by": produced_by or {
        "closed-loop": "built-in closed-loop phase model (harness.cache.timing)",
        "open-loop": "built-in open-loop formula (harness.cache.timing)"}[t.model]}
