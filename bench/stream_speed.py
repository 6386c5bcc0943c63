"""Access-stream generation speed, and peak memory of `simulate --index-log` on a long run.

1. Line accesses generated per second from an index log (DeepSeek-V3.2 geometry, paged,
   4 concurrent requests), consumed chunk by chunk as the simulator consumes them.
2. Peak resident memory of `dsa-harness simulate --index-log` (built-in simulator, bounds on)
   for a short and a long decode of the same shape: the stream is generated and simulated in
   chunks, so the peak should not grow with the run's length.

    python bench/stream_speed.py [--steps 512]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

from _timing import best_of

from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall time of a child process."""
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=512)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = IndexLog(write_synthetic_log(f"{tmp}/gen", steps=16, layers=8, topk=256, prompt=4096, requests=4))
        src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout("paged", 64, "shuffled", seed=1))
        for _ in src.chunks(reuse=True):  # compile, touch the buffers
            pass
        n, best = best_of(lambda: sum(len(c) for c in src.chunks(reuse=True)))
        print(f"stream generation: {n / best / 1e6:.0f} M line accesses/s ({n:,} lines, best of 3)")

        for steps in (max(8, a.steps // 16), a.steps):
            path = write_synthetic_log(f"{tmp}/run{steps}", steps=steps, layers=8, topk=256, prompt=4096, requests=2)
            cmd = [sys.executable, "-m", "harness.cli", "simulate", "--index-log", str(path), "--geometry",
                   "deepseek-v3.2", "--layout", "paged", "--llc-size", "32MiB", "--reserve-ways", "8",
                   "--format", "json"]
            rss, wall = peak_rss_mb(cmd)
            lines = steps * 2 * 61 * (256 * 11 + 11 + (4096 + steps) * 132 // 64)
            print(f"simulate --index-log, {steps} steps (~{lines / 1e6:.0f} M line accesses): "
                  f"peak RSS so far {rss:.0f} MB, {wall:.0f} s")


if __name__ == "__main__":
    main()
