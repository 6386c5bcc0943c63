"""gem5's open-loop trace replay (``gem5_configs/replay_llc.py``): write the stream as packet
traces, run the replay and read ``stats.txt`` into the same result keys as the built-in
simulator.

The stream is split into one packet trace per traffic class, each keeping the global tick of
every request, and each replayed by its own TrafficGen: gem5's per-requestor LLC statistics then
give hits and misses per class. Requests are ``tick_spacing`` ps apart; at the default 1 us no
two overlap, which is where gem5's counts equal the built-in model's exactly.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness import __version__
from harness.cache.llc import LLCConfig
from harness.core.accesstrace import LineAccesses
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
from harness.gem5.stats import parse_stats, results_from_stats

CONFIG_SCRIPT = CONFIG_DIR / "replay_llc.py"
# The trace replay sends no decode steps, which streak reads.
REPLAY_POLICIES = tuple(p for p in GEM5_POLICIES if p != "streak")


def write_class_traces(folder: Path, chunks: Iterable[LineAccesses], spacing: int
                       ) -> tuple[list[tuple[str, Path, int]], int]:
    """One packet trace per traffic class present; every packet keeps its global tick.
    Returns (class, path, packets) in class-code order, and the highest byte address."""
    from trace_gen.gem5trace import encode_packets, open_packet_trace

    files, counts = {}, {}
    first, top = 0, 0
    try:
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            ticks = (np.arange(len(chunk), dtype=np.int64) + first) * spacing
            first += len(chunk)
            top = max(top, int(chunk.line.max()) << 6)
            for code in np.unique(chunk.cls):
                mask = chunk.cls == code
                if code not in files:
                    files[code] = open_packet_trace(folder / f"{TRAFFIC_CLASSES[code]}.pb.gz")
                    counts[code] = 0
                files[code].write(encode_packets(chunk.line[mask], chunk.write[mask], ticks[mask]))
                counts[code] += int(mask.sum())
    finally:
        for f in files.values():
            f.close()
    return [(TRAFFIC_CLASSES[c], folder / f"{TRAFFIC_CLASSES[c]}.pb.gz", counts[c]) for c in sorted(files)], top


def simulate_gem5(chunks: Iterable[LineAccesses], cfg: LLCConfig, address_map: dict | None,
                  binary: str | None = None, outdir: str | Path | None = None, timeout: float = 3600,
                  tick_spacing: int = 1_000_000, dram: str = "DDR4_2400_8x8", clock: str = "2GHz",
                  l1_size: str | None = None, extra_config: dict | None = None) -> dict:
    """Run one stream through gem5 and return the result dict (see ``results_from_stats``)."""
    binary = find_gem5(binary)
    check_extension(binary)
    check_llc(cfg)
    policy = cfg.policy if cfg.reserve_ways else "lru"  # without a reservation every way is LRU
    if policy not in REPLAY_POLICIES:
        raise UserError(f"gem5's trace replay runs {' and '.join(REPLAY_POLICIES)} in the reserved ways, not "
                        f"{policy!r} (streak needs each request's decode step: the closed-loop config has it)")
    if cfg.reserve_ways and not address_map:
        raise UserError("a reservation in gem5 needs the KV address range: simulate from --index-log "
                        "(an access trace has no address map)")
    if tick_spacing < 1:
        raise UserError(f"tick spacing must be at least 1 ps, got {tick_spacing}")
    classes = class_options(cfg, address_map)
    outdir = Path(outdir) if outdir else Path(tempfile.mkdtemp(prefix="dsa-llc-gem5-"))
    outdir.mkdir(parents=True, exist_ok=True)
    traces, top = write_class_traces(outdir, chunks, tick_spacing)
    if not traces:
        raise UserError("the stream is empty: nothing to simulate")
    amap = address_map or {"kv_base": 0, "kv_end": 0, "token_stride": 64, "memory_bytes": 0}
    cmd = [binary, "-d", str(outdir / "m5out"), str(CONFIG_SCRIPT)]
    for _, path, _ in traces:
        cmd += ["--trace", str(path)]
    cmd += ["--llc-size", f"{cfg.size}B", "--llc-assoc", str(cfg.ways), "--reserve-ways", str(cfg.reserve_ways),
            "--policy", policy, "--kv-start", str(amap["kv_base"]), "--kv-end", str(max(amap["kv_end"], amap["kv_base"] + 1)),
            "--token-stride", str(amap["token_stride"]), "--dram", dram, "--clock", clock,
            "--mem-size", memory_size(max(amap["memory_bytes"], top + 64))]
    if policy == "token-lru" and cfg.whole_token_eviction:
        cmd.append("--whole-token-eviction")
    if l1_size:
        cmd += ["--l1-size", l1_size]
    cmd += option_flags(classes)
    wall = run_gem5(cmd, outdir, timeout)
    stats = parse_stats(outdir / "m5out" / "stats.txt")
    result = results_from_stats(stats, [c for c, _, _ in traces])
    packets = sum(n for _, _, n in traces)
    if result["accesses"] != packets:
        result["gem5"]["note"] = (f"LLC saw {result['accesses']:,} accesses for {packets:,} packets "
                                  "(MSHR merges or suppressed packets)")
    result["gem5"].update({"wall_seconds": wall, "packets": packets, "command": cmd,
                           "outdir": str(outdir), "tick_spacing_ps": tick_spacing})
    result["config"] = {"llc": cfg.to_dict(), "backend": "gem5", "gem5_binary": binary, "dram": dram,
                        "clock": clock, "l1_size": l1_size, "tick_spacing_ps": tick_spacing,
                        **(extra_config or {})}
    result["version"] = __version__
    return result
