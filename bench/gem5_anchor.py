"""The performance anchor: gem5 against the built-in simulator on the same DSA stream.

A ~1M-line stream (synthetic index log, DeepSeek-V3.2 geometry, paged layout) through a
2 MiB / 16-way LLC, requests 1 us apart (no overlap), once without reservation (LRU) and once
with 4 reserved ways under token-LRU with whole-token eviction. Prints both simulators' line
accesses per second (gem5: per host second as gem5 reports it, and per wall second including
start-up) and checks that their hit and miss counts are equal.

    python bench/gem5_anchor.py --gem5 /path/to/gem5.opt [--accesses 1e6]
"""

from __future__ import annotations

import argparse
import tempfile

from _timing import best_of

from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from harness.gem5.binary import find_gem5
from harness.gem5.replay import simulate_gem5
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gem5", default=None)
    ap.add_argument("--accesses", type=float, default=1e6)
    a = ap.parse_args()
    binary = find_gem5(a.gem5)
    # one step: 4 log layers x k=64 over a 512-token prompt, stretched to 61 layers
    per_step = 61 * (64 * 11 + 11 + 512 * 132 // 64 + 10)
    steps = max(1, round(a.accesses / per_step))
    with tempfile.TemporaryDirectory() as tmp:
        log = IndexLog(write_synthetic_log(f"{tmp}/log", steps=steps, layers=4, topk=64, prompt=512))
        src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged", page_tokens=64))
        for cfg in (LLCConfig.make("2MiB", 16, 0, "lru"), LLCConfig.make("2MiB", 16, 4, "token-lru", True)):
            b = simulate(src.chunks(reuse=True), cfg, bounds=False)  # loads the compiled kernels
            _, builtin_s = best_of(lambda c=cfg: simulate(src.chunks(reuse=True), c, bounds=False))
            g = simulate_gem5(src.chunks(reuse=True), cfg, src.amap.describe(), binary, outdir=f"{tmp}/g5")
            n = g["gem5"]["packets"]
            same = (b["hits"], b["misses"]) == (g["hits"], g["misses"])
            print(f"{cfg.reserve_ways} reserved ways, {cfg.policy if cfg.reserve_ways else 'lru'}: "
                  f"{n:,} line accesses, hits/misses {'equal' if same else 'DIFFERENT'} "
                  f"({g['hits']:,}/{g['misses']:,})")
            print(f"  built-in {n / builtin_s / 1e6:8.2f} M accesses/s (whole run incl. stream generation, "
                  f"{builtin_s:.2f} s)")
            print(f"  gem5     {g['gem5']['line_accesses_per_host_second'] / 1e6:8.3f} M accesses/s per host "
                  f"second ({g['gem5']['host_seconds']:.1f} s), {n / g['gem5']['wall_seconds'] / 1e6:.3f} M/s "
                  f"wall ({g['gem5']['wall_seconds']:.1f} s incl. start-up)")
            print(f"  ratio    built-in / gem5 host rate = "
                  f"{(n / builtin_s) / g['gem5']['line_accesses_per_host_second']:.0f}x")


if __name__ == "__main__":
    main()
