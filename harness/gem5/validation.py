"""The cross-validation of the built-in decode-step time against gem5 (bench/gem5_steptime.py
runs it; tests/test_gem5_steptime.py re-checks its committed runs without gem5): the grid of
configurations, how each is set up in both models, and the error and speed-up arithmetic.

Both models see the same machine: the platform's values, its in-flight limit replaced by the
configuration's, and its memory bandwidth replaced by that of the gem5 memory
(:func:`harness.gem5.decode_step.gem5_bandwidth_per_cycle`: gem5 builds a power of two of channels).
"""

from __future__ import annotations

import itertools

import numpy as np

from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from harness.cache.timing import TimingConfig, step_time
from harness.gem5.decode_step import gem5_bandwidth_per_cycle
from trace_gen.stream import StreamSource

UNCALIBRATED = {"bw_efficiency": 1.0, "latency_factor": 1.0}

GEOMETRIES = ("deepseek-v3.2", "llama-3.1-8b")
SIZES = ("8MiB", "32MiB")
POLICIES = (("none", 0), ("lru", 4), ("token-lru", 4), ("streak", 4))
IN_FLIGHT = (64, 256)
STREAM = {"layout": "paged", "page_tokens": 64, "page_order": "in-order", "layout_seed": 0, "weights": False}


def grid(logs: dict[str, str]) -> list[dict]:
    """The configurations: every log, geometry, size and policy; the in-flight limit alternates
    over (log, geometry, size) so that each limit meets every other factor."""
    out = []
    for i, (name, geometry, size) in enumerate(itertools.product(logs, GEOMETRIES, SIZES)):
        in_flight = IN_FLIGHT[(i + i // len(SIZES)) % len(IN_FLIGHT)]
        for policy, reserve in POLICIES:
            out.append({"log": name, "geometry": geometry, "size": size, "policy": policy,
                        "reserve_ways": reserve, "max_outstanding": in_flight})
    return out


def config_id(c: dict) -> str:
    return f"{c['log']}-{c['geometry']}-{c['size']}-{c['policy']}{c['reserve_ways']}-q{c['max_outstanding']}"


def timing_for(c: dict, platform: str, calibrated: dict | None = None) -> TimingConfig:
    """The built-in model's timing of a validation configuration: gem5's memory bandwidth and
    phase semantics (compute after memory: overlap 0)."""
    base = TimingConfig.make(platform, max_outstanding=c["max_outstanding"], overlap=0.0)
    t = TimingConfig.make(platform, max_outstanding=c["max_outstanding"],
                          dram_bytes_per_cycle=gem5_bandwidth_per_cycle(base), overlap=0.0)
    return TimingConfig(**{**t.to_dict(), **(calibrated or UNCALIBRATED)})


def llc_for(c: dict) -> LLCConfig:
    return LLCConfig.make(c["size"], 16, c["reserve_ways"], "lru" if c["policy"] == "none" else c["policy"], False)


def source(logs: dict[str, str], c: dict) -> StreamSource:
    return StreamSource.from_options(logs[c["log"]], {"geometry": c["geometry"], **STREAM})


def errors(gem5: list[float], model: list[float]) -> np.ndarray:
    return np.asarray(model) / np.asarray(gem5) - 1


def speedups(configs: list[dict], times: list[float]) -> dict[int, float]:
    """Index of each reserved configuration -> its step time's speed-up over its baseline."""
    base = {}
    for i, c in enumerate(configs):
        if c["policy"] == "none":
            base[tuple(c[k] for k in ("log", "geometry", "size", "max_outstanding"))] = times[i]
    return {i: base[tuple(c[k] for k in ("log", "geometry", "size", "max_outstanding"))] / times[i]
            for i, c in enumerate(configs) if c["policy"] != "none"}


def fit(logs, configs, gem5_times, platform, steps, train: list[int]) -> dict:
    """``latency_factor`` minimising the squared log error on ``train``; ``bw_efficiency`` stays
    1.0. The grid's in-flight limits (64, 256) cannot reach the memory's bandwidth: gem5 delivers
    what Little's law allows (256 x 64 B per loaded miss latency, a third of the Xeon's peak), so
    a fitted bandwidth share would only copy the latency term there and cap the bandwidth where
    the presets' thousands of requests in flight could use it."""
    best = None
    for lf in np.arange(1.0, 3.001, 0.01):
        cal = {"bw_efficiency": 1.0, "latency_factor": round(float(lf), 3)}
        score = sum(np.log(model_time(logs, configs[i], platform, steps, cal) / gem5_times[i]) ** 2 for i in train)
        if best is None or score < best[0]:
            best = (score, cal)
    return best[1]


_PHASES: dict = {}


def model_counts(logs, c, platform, steps, mshr_window: int | None = None):
    """The built-in model's per-phase counts of a configuration (``harness.cache.simulate.per_phase``)
    and its batch, simulated once: they depend on the log, the steps and the requests in flight
    (MSHR merging; ``mshr_window`` overrides the timing's window, 1: no merging), not on the
    calibration."""
    key = (config_id(c), logs[c["log"]], steps, platform, mshr_window)
    if key not in _PHASES:
        src = source(logs, c)
        _, counts = simulate(src.chunks(as_lines=True, steps=steps), llc_for(c), timing_for(c, platform),
                             bounds=False, phases=src.phases(steps), batch=src.log.requests, return_phases=True,
                             mshr_window=mshr_window)
        _PHASES[key] = (counts, src.log.requests)
    return _PHASES[key]


def model_time(logs, c, platform, steps, cal, mshr_window: int | None = None) -> float:
    """Built-in step time; the per-phase LLC counts (which do not depend on timing) are
    simulated once per configuration and re-timed for every calibration tried."""
    counts, batch = model_counts(logs, c, platform, steps, mshr_window)
    return step_time(counts, timing_for(c, platform, cal), batch)["step_time_cycles"]


def measured_memory_reads(counts, warmup_steps: int = 1) -> int:
    """Memory reads (misses less MSHR-merged ones) of the measured steps of per-phase counts,
    which gem5's statistics cover."""
    first = counts.step.min() + warmup_steps
    m = counts[counts.step >= first]
    return int((m.misses - m.merged).sum())
