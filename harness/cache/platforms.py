"""Decode engines the step-time model and the gem5 closed-loop config describe: clock, LLC, memory,
the requests the engine can keep in flight, and its peak compute.

Every hardware number cites its public source; a number derived from others says how. Where a
vendor does not publish a value (an LLC's associativity), the preset says what it assumes.
Platform values are defaults: ``--llc-size``/``--ways`` and the timing options override them.

``mem_latency_cycles`` is the unloaded latency of an LLC miss as the engine sees it (LLC lookup
included), ``llc_hit_cycles`` that of an LLC hit. ``max_outstanding`` is the engine's requests in
flight; for GPUs, where no such limit is published, it is Little's law on the published bandwidth
and latency (the concurrency needed to reach peak bandwidth). ``issue_per_cycle`` is how many line
requests the engine can send to the LLC per cycle.

``gem5_mem`` is the gem5 DRAM interface of the platform's memory type (harness.gem5.decode_step
gives gem5_configs/decode_step.py the power of two of its channels closest to the platform's
bandwidth). ``latency_factor`` is a miss's latency while many are in flight over its unloaded
latency (DRAM queueing and bank conflicts), calibrated against gem5 runs of the platform
(bench/gem5_steptime.py; 1.0 means not calibrated); ``bw_efficiency``, the share of peak
bandwidth the built-in model assumes is achieved, stays 1.0 (harness.gem5.validation.fit says why).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from harness.cache.calibration import calibrated_values
from harness.core.errors import UserError
from harness.core.settings import default
from harness.core.traffic import LINE_BYTES


@dataclass(frozen=True)
class CacheKnobs:
    """The LLC controls a platform documents for software (harness.cache.partitions models
    them): way reservations per class of service and their limits, the insertion hints, and the
    largest persisting set-aside. ``source`` cites them; empty: none documented."""

    way_reservation: bool = False
    min_ways: int = 1
    classes_of_service: int = 0
    hints: tuple[str, ...] = ()
    persisting_max: int = 0          # bytes
    source: str = "no user control of the LLC's allocation is documented"


# Intel RDT cache allocation on Sapphire Rapids: a 15-bit way mask per class of service, 15
# classes, masks contiguous and of at least one way (CPUID leaf 10H subleaf 1 of a Sapphire Rapids
# part, EAX 0xE, EDX 0xE, ECX bit 3 clear, in the InstLatx64 CPUID dump of a Xeon w9-3475X;
# Linux arch/x86/kernel/cpu/resctrl/core.c, min_cbm_bits = 1). No per-address insertion hint for
# the LLC is documented.
XEON_CAT = CacheKnobs(way_reservation=True, min_ways=1, classes_of_service=15,
                      source="Intel RDT cache allocation: 15-way masks per class of service, 15 classes, "
                             "contiguous, at least 1 way")
# NVIDIA L2 persistence (CUDA C++ Programming Guide, "L2 Cache Control": compute capability 8.0
# and above): an accessPolicyWindow marks a hitRatio share of an address window persisting, the
# rest streaming; persisting lines use a set-aside of at most persistingL2CacheMaxSize. That
# maximum is published for the A100 (30 of its 40 MiB, NVIDIA developer forum) but not for the
# H100: 75 % of the L2, the A100's share, is assumed (37.5 MiB of 50). Streaming (evict-first)
# accesses: cudaAccessPropertyStreaming and PTX ld.L2::evict_first. No way partitioning by data
# class (MIG partitions the L2 per GPU instance, not per class).
HOPPER_L2 = CacheKnobs(hints=("streaming", "persisting"), persisting_max=75 * (50 << 20) // 100,
                       source="CUDA L2 persistence (set-aside at most 37.5 MiB: assumed, 75 % of the L2 as on the "
                              "A100) and evict-first hints; no way partitioning")


@dataclass(frozen=True)
class Platform:
    name: str
    description: str
    clock_hz: float
    llc_size: int            # bytes
    llc_ways: int
    llc_hit_cycles: int
    mem_latency_cycles: int
    mem_bytes_per_cycle: float
    max_outstanding: int
    issue_per_cycle: float
    peak_flops: float        # dense, the precision the decode's GEMMs run in (per second)
    gem5_mem: str = "DDR5_4400_4x8"
    bw_efficiency: float = 1.0
    latency_factor: float = 1.0
    # Share of the shorter of a phase's memory and compute time hidden under the longer
    # (harness.cache.timing.phase_time): 1 is the roofline, a kernel that streams its operands
    # while it computes, as the decode's GEMV/GEMM, FlashMLA and DeepGEMM kernels do on GPUs and
    # AMX tiles with hardware prefetch do on the Xeon.
    overlap: float = 1.0
    # The cache controls software has (CacheKnobs); none by default
    knobs: CacheKnobs = field(default_factory=lambda: CacheKnobs())
    # The host tier (see the module docstring); None: not an accelerator with a host link.
    hbm_bytes: int | None = None
    host_bytes: int | None = None
    link: str = ""
    link_bytes_per_s: float | None = None
    link_latency_s: float | None = None

    @property
    def mem_bandwidth(self) -> float:
        """Bytes per second."""
        return self.mem_bytes_per_cycle * self.clock_hz

    @property
    def flops_per_cycle(self) -> float:
        return self.peak_flops / self.clock_hz

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **values) -> Platform:
        """The platform with some values replaced (None leaves a value as it is)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def _littles_law(bandwidth: float, latency_s: float) -> int:
    """Line requests in flight needed to sustain ``bandwidth`` (B/s) at ``latency_s``."""
    return math.ceil(bandwidth * latency_s / LINE_BYTES)


# Host links. PCIe 5.0 x16: 32 GT/s per lane, 16 lanes, 128b/130b coding =
# 63.0 GB/s per direction (PCI-SIG PCIe 5.0; NVIDIA quotes "PCIe Gen5: 128GB/s" both directions,
# H100 product page). NVLink-C2C (GH200, GB200): 900 GB/s total, 450 GB/s per direction (NVIDIA,
# "NVIDIA Grace Hopper Superchip Architecture In-Depth", technical blog). Latency of one batched
# host-to-device gather: no vendor publishes it; 1 us is assumed for both (a GPU-issued read of
# pinned host memory over PCIe is a round trip of about that; NVLink-C2C host memory is taken as
# NUMA-remote DRAM, 0.8-1 us loaded); a driver-issued cudaMemcpyAsync costs 5-7 us per call
# (DualPath, arXiv 2602.21548, section 5.2), which a single fused gather kernel per layer avoids.
_PCIE5_X16 = ("PCIe 5.0 x16", 32e9 * 16 * 128 / 130 / 8, 1e-6)
_NVLINK_C2C = ("NVLink-C2C", 450e9, 1e-6)

_XEON_CLOCK = 2.0e9
_H100_CLOCK = 1.755e9
_MI300X_CLOCK = 2.1e9

PLATFORMS = {p.name: p for p in [
    # Intel Xeon Platinum 8480+ (Sapphire Rapids-SP), one socket as the decode engine.
    # Intel ARK: 56 cores, 2.0 GHz base, 105 MB LLC, 8 channels of DDR5-4800 (8 x 38.4 GB/s =
    # 307.2 GB/s). LLC: 1.875 MB per core slice, 15-way (Intel 64 and IA-32 Architectures
    # Optimization Reference Manual, Sapphire Rapids server LLC). LLC hit ~33 ns and memory
    # ~110 ns unloaded (Chips and Cheese, "Sapphire Rapids: Golden Cove Hits the Server Market",
    # 2023, latency plots). In flight: 48 outstanding L2 misses per Golden Cove core (optimization
    # manual) x 56 cores. Issue: one LLC request per core per cycle (an assumption). Compute: AMX,
    # 1024 BF16 FLOP per cycle per core (one 16x16x32 TDPBF16PS per 16 cycles; Intel AMX
    # documentation) x 56 cores x 2.0 GHz = 114.7 TFLOP/s.
    Platform("xeon-8480", "CPU server: Intel Xeon Platinum 8480+, 105 MiB LLC, 8 x DDR5-4800",
             _XEON_CLOCK, 105 << 20, 15, round(33e-9 * _XEON_CLOCK), round(110e-9 * _XEON_CLOCK),
             307.2e9 / _XEON_CLOCK, 56 * 48, 56, 56 * 1024 * _XEON_CLOCK, knobs=XEON_CAT),
    # NVIDIA H100 SXM5 80 GB. NVIDIA H100 datasheet: 50 MB L2, 3.35 TB/s HBM3, 989 TFLOP/s dense
    # BF16. Clock 1755 MHz with L2 hit latency 200 cycles and global memory latency 400 cycles, and
    # 8986 GB/s of L2 bandwidth (open-access table of Nvidia GPU features, Ultrasonics
    # Sonochemistry 99 (2023) 106546, Table 3, PMC10448217). L2 associativity is not published:
    # 16 ways assumed. In flight: Little's law (3.35 TB/s x 400 cycles). Issue: L2 bandwidth in
    # lines per cycle (8986 GB/s / 64 B / 1.755 GHz = 80).
    Platform("h100-sxm", "HBM accelerator: NVIDIA H100 SXM, 50 MiB L2, HBM3 3.35 TB/s",
             _H100_CLOCK, 50 << 20, 16, 200, 400, 3.35e12 / _H100_CLOCK,
             _littles_law(3.35e12, 400 / _H100_CLOCK), round(8986e9 / LINE_BYTES / _H100_CLOCK), 989e12,
             "HBM_2000_4H_1x64",
             # 80 GB of HBM3 (datasheet). Host: "accelerator_host_interconnect": "PCIe Gen5 x16",
             # "host_memory_capacity": "2 TB" for 8 GPUs (MLCommons inference v3.1, Dell
             # XE9680_H100_SXM_80GBx8_TRT.json): 250 GB per GPU.
             hbm_bytes=80 * 10**9, host_bytes=2 * 10**12 // 8, link=_PCIE5_X16[0],
             link_bytes_per_s=_PCIE5_X16[1], link_latency_s=_PCIE5_X16[2], knobs=HOPPER_L2),
    # NVIDIA H200 SXM 141 GB: the H100's GH100 die (its clock, L2 and compute: 989 TFLOP/s dense
    # BF16/FP16, AnandTech "NVIDIA at SC23: H200 Accelerator with HBM3e", spec table) with 141 GB
    # of HBM3e at 4.8 TB/s (same table; NVIDIA's MLPerf system "accelerator_memory_capacity":
    # "141 GB"). Host: "PCIe Gen5 x16", "host_memory_capacity": "2 TB" for 8 GPUs (MLCommons
    # inference v4.1, NVIDIA H200-SXM-141GBx8_TRT_MaxQ.json). In flight: Little's law as the H100's.
    Platform("h200", "HBM accelerator: NVIDIA H200 SXM, 50 MiB L2, HBM3e 4.8 TB/s, 141 GB",
             _H100_CLOCK, 50 << 20, 16, 200, 400, 4.8e12 / _H100_CLOCK,
             _littles_law(4.8e12, 400 / _H100_CLOCK), round(8986e9 / LINE_BYTES / _H100_CLOCK), 989e12,
             "HBM_2000_4H_1x64", hbm_bytes=141 * 10**9, host_bytes=2 * 10**12 // 8, link=_PCIE5_X16[0],
             link_bytes_per_s=_PCIE5_X16[1], link_latency_s=_PCIE5_X16[2], knobs=HOPPER_L2),
    # NVIDIA GH200 Grace Hopper Superchip (96 GB version): an H100 GPU (its clock, L2 and compute
    # as above) with 96 GB of HBM3 at 4 TB/s, and a Grace CPU with 480 GB of LPDDR5X, joined by
    # NVLink-C2C (NVIDIA GH200 announcement, Computex 2023: "96GB HBM3 ... 4TB/s", "480GB
    # LPDDR5X"; the link as above).
    Platform("gh200", "HBM accelerator: NVIDIA GH200 (H100 + Grace), HBM3 4 TB/s, 96 GB, NVLink-C2C host",
             _H100_CLOCK, 50 << 20, 16, 200, 400, 4.0e12 / _H100_CLOCK,
             _littles_law(4.0e12, 400 / _H100_CLOCK), round(8986e9 / LINE_BYTES / _H100_CLOCK), 989e12,
             "HBM_2000_4H_1x64", hbm_bytes=96 * 10**9, host_bytes=480 * 10**9, link=_NVLINK_C2C[0],
             link_bytes_per_s=_NVLINK_C2C[1], link_latency_s=_NVLINK_C2C[2], knobs=HOPPER_L2),
    # AMD Instinct MI300X. AMD MI300X data sheet: 2100 MHz peak engine clock, 256 MB Infinity
    # Cache, 8 HBM3 stacks with 5.3 TB/s, 1307.4 TFLOP/s dense BF16; Infinity Cache peak bandwidth
    # 17.2 TB/s (AMD CDNA 3 architecture white paper). Infinity Cache hit ~220 ns and HBM ~350 ns
    # (read approximately from the pointer-chasing latency plot of Chips and Cheese, "Testing AMD's
    # Giant MI300X", 2024). Associativity not published: 16 ways assumed. In flight: Little's law
    # (5.3 TB/s x 350 ns). Issue: Infinity Cache bandwidth in lines per cycle.
    Platform("mi300x", "HBM accelerator: AMD Instinct MI300X, 256 MiB Infinity Cache, HBM3 5.3 TB/s",
             _MI300X_CLOCK, 256 << 20, 16, round(220e-9 * _MI300X_CLOCK), round(350e-9 * _MI300X_CLOCK),
             5.3e12 / _MI300X_CLOCK, _littles_law(5.3e12, 350e-9),
             round(17.2e12 / LINE_BYTES / _MI300X_CLOCK), 1307.4e12, "HBM_2000_4H_1x64",
             # 192 GB of HBM3 (data sheet). Host: "accelerator_host_interconnect": "PCIe Gen5 x16",
             # "host_memory_capacity": "1.5TiB" for 8 GPUs (MLCommons inference v4.1, AMD
             # 8xMI300X_2xEPYC-9374F.json).
             hbm_bytes=192 * 10**9, host_bytes=(3 << 39) // 8, link=_PCIE5_X16[0],
             link_bytes_per_s=_PCIE5_X16[1], link_latency_s=_PCIE5_X16[2]),
]}
DEFAULT_PLATFORM = default("timing", "platform")


def get_platform(name: str) -> Platform:
    """A preset, with the values fitted to gem5 runs of it applied (harness.cache.calibration)."""
    if name not in PLATFORMS:
        raise UserError(f"unknown platform {name!r}; known: {', '.join(PLATFORMS)}")
    return PLATFORMS[name].with_overrides(**calibrated_values(name))
