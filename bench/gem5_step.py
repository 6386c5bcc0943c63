"""gem5's closed-loop decode-step config: host speed, and what its memory configs deliver.

1. Host throughput: a ~1M-line DSA stream (synthetic index log, DeepSeek-V3.2 geometry, paged
   layout) as unbatched phases through a 2 MiB / 16-way LLC with 4 reserved ways under streak,
   into 2 DDR5 channels, with 64, 256 and 1024 requests in flight (gem5's MSHR and write queues
   are lists scanned per access, so host time grows with the requests in flight). Prints line
   requests per host second.
2. Per memory type (DDR5_4400_4x8 and HBM_2000_4H_1x64 by default), as the generator sees it:
   the unloaded read latency (256 misses to lines 1 KiB apart, one in flight; and an LLC hit
   for comparison) and the sustained read bandwidth per channel (streaming reads of 16 MiB
   with 256 in flight, on 1 and 4 channels), next to the interface's peak burst rate.

    python bench/gem5_step.py --gem5 /path/to/gem5.fast [--accesses 1e6] [--mem DDR5_4400_4x8 ...]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

from harness.cache.llc import LLCConfig
from harness.core.traffic import OTHER
from harness.gem5.binary import find_gem5
from harness.gem5.decode_step import llc_options, run_step_replay
from harness.gem5.phasefile import GATHER_PHASE, Phase, phases_from_stream, write_phase_file
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

LLC = {"llc_size": "1MiB", "llc_assoc": 16, "mem_size": "1GiB", "clock": "2GHz", "llc_hit_cycles": 20}


def read_phase(lines: np.ndarray) -> Phase:
    n = len(lines)
    return Phase(0, 0, GATHER_PHASE, True, 0, lines.astype(np.int64), np.full(n, OTHER, np.uint8),
                 np.zeros(n, np.uint8))


def host_throughput(binary: str, accesses: float, tmp: Path) -> None:
    per_step = 61 * (64 * 11 + 11 + 512 * 132 // 64 + 10)
    steps = max(1, round(accesses / per_step))
    log = IndexLog(write_synthetic_log(tmp / "log", steps=steps, layers=4, topk=64, prompt=512))
    src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged", page_tokens=64))
    counts = write_phase_file(tmp / "stream.phases", phases_from_stream(src.chunks(), compute_ticks=1000))
    options = llc_options(LLCConfig.make("2MiB", 16, 4, "streak", True), src.amap.describe())
    print(f"host throughput: {counts['requests']:,} line requests in {counts['phases']:,} phases")
    for in_flight in (64, 256, 1024):
        run = run_step_replay(binary, tmp / "stream.phases", options | {
            "max_outstanding": in_flight, "issue_width": 4, "mem_type": "DDR5_4400_4x8", "mem_channels": 2},
            tmp / f"throughput{in_flight}")
        r, g = run.results, run.results["gem5"]
        print(f"  {in_flight:4d} in flight: {counts['requests'] / g['host_seconds'] / 1e6:.3f} M requests per host "
              f"second ({g['host_seconds']:.1f} s host, {run.wall_seconds:.1f} s wall incl. start-up); "
              f"{r['hits']:,} hits, {r['misses']:,} misses, {r['bypasses']:,} bypasses, "
              f"simulated {g['sim_ticks'] / 1e6:.0f} us")


def memory_figures(binary: str, mem: str, tmp: Path) -> None:
    n = 256
    lines = (np.arange(n) * 16 + (1 << 20)).astype(np.int64)  # 1 KiB apart: the next DRAM bank
    write_phase_file(tmp / "lat.phases", [read_phase(lines), read_phase(lines)])  # misses, then hits
    run = run_step_replay(binary, tmp / "lat.phases", LLC | {"mem_type": mem, "max_outstanding": 1},
                          tmp / f"{mem}-lat")
    wait = (run.phases.mem_done_tick - run.phases.start_tick).to_numpy() / n / 1000
    print(f"{mem}: unloaded read miss latency {wait[0]:.1f} ns, LLC hit {wait[1]:.1f} ns "
          f"(generator to generator, {LLC['llc_hit_cycles']}-cycle LLC at {LLC['clock']})")
    stream = (np.arange(16 << 14) + (1 << 20)).astype(np.int64)  # 16 MiB of consecutive lines
    write_phase_file(tmp / "bw.phases", [read_phase(stream)])
    for channels in (1, 4):
        run = run_step_replay(binary, tmp / "bw.phases", LLC | {
            "mem_type": mem, "mem_channels": channels, "max_outstanding": 256, "issue_width": 4},
            tmp / f"{mem}-bw{channels}")
        ticks = int(run.phases.mem_done_tick.iloc[0] - run.phases.start_tick.iloc[0])
        gbs = len(stream) * 64 / (ticks * 1e-12) / 1e9
        peak = float(re.search(r"memory peak ([\d.]+) GB/s", (run.outdir / "gem5.stdout").read_text()).group(1))
        print(f"  {channels} channel(s): {gbs:.1f} GB/s sustained reads, {gbs / channels:.1f} GB/s per channel "
              f"(peak burst rate {peak / channels:.1f} GB/s per channel)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gem5", default=None)
    ap.add_argument("--accesses", type=float, default=1e6)
    ap.add_argument("--mem", action="append", default=None, help="gem5 DRAM interface (repeatable)")
    a = ap.parse_args()
    binary = find_gem5(a.gem5)
    with tempfile.TemporaryDirectory() as tmp:
        host_throughput(binary, a.accesses, Path(tmp))
        for mem in a.mem or ["DDR5_4400_4x8", "HBM_2000_4H_1x64"]:
            memory_figures(binary, mem, Path(tmp))


if __name__ == "__main__":
    main()
