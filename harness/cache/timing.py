"""A first-order timing model: per-step LLC hits and misses -> memory stall cycles.

For each decode step with H line hits, M line misses (DRAM reads, bypasses included) and B dirty
writebacks, at most ``max_outstanding`` requests are in flight at once, so

    latency_bound   = ceil(M / max_outstanding) * dram_latency_cycles
    bandwidth_bound = (M + B) * 64 / dram_bytes_per_cycle
    stall_cycles    = max(latency_bound, bandwidth_bound) + ceil(H / max_outstanding) * llc_hit_cycles

i.e. misses overlap up to the outstanding-miss limit and are capped by DRAM bandwidth, and hits
are pipelined the same way at the LLC hit latency. The model ignores compute overlap and
dependences inside a step (the indexer scan before the KV gather); gem5 gives the cycle-level
answer for the same stream. Defaults describe a 2 GHz core clock: 40-cycle LLC hit, 100 ns DRAM
latency (200 cycles), 32 outstanding misses (the MSHRs of the gem5 configs), 64 B/cycle of
DRAM bandwidth (128 GB/s).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from harness.core.classes import LINE_BYTES
from harness.core.errors import UserError


@dataclass(frozen=True)
class TimingConfig:
    llc_hit_cycles: int = 40
    dram_latency_cycles: int = 200
    max_outstanding: int = 32
    dram_bytes_per_cycle: float = 64.0

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise UserError(f"timing parameter {name} must be a positive finite number, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def stall_cycles(hits: np.ndarray, misses: np.ndarray, writebacks: np.ndarray,
                 t: TimingConfig) -> np.ndarray:
    """Stall cycles of each step (arrays of per-step line counts)."""
    hits, misses, writebacks = (np.asarray(a, dtype=np.float64) for a in (hits, misses, writebacks))
    latency = np.ceil(misses / t.max_outstanding) * t.dram_latency_cycles
    bandwidth = (misses + writebacks) * LINE_BYTES / t.dram_bytes_per_cycle
    return np.maximum(latency, bandwidth) + np.ceil(hits / t.max_outstanding) * t.llc_hit_cycles
