"""Access-stream generation speed, and peak memory and speed of `simulate --index-log`.

1. Line accesses generated per second from an index log (DeepSeek-V3.2 geometry, paged,
   4 concurrent requests), consumed chunk by chunk as the simulator consumes them.
2. Peak resident memory and line accesses per second of `dsa-harness simulate --index-log`
   (built-in simulator, bounds on) for a short and a long decode of the same shape (k = 256,
   4k context, 2 requests): the stream is generated and simulated in chunks, so the peak should
   not grow with the run's length.
3. The same at serving scale: 32k context, k = 2048, a batch of 8, DeepSeek-V3.2 geometry, a
   256 MiB LLC (target: peak RSS < 4 GB, lines/s within 2x of the small runs').

    python bench/stream_speed.py [--steps 512] [--scale-steps 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from _timing import best_of

from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

# runs the CLI in a child that reports its own peak RSS (kB) on exit
_CHILD = ("import atexit, resource, sys; atexit.register(lambda: print('maxrss', resource.getrusage("
          "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); from harness.cli import main; "
          "sys.argv[0] = 'dsa-harness'; main()")


def simulate_child(log, *options: str) -> tuple[int, float, float]:
    """Line accesses, peak RSS (MB) and wall time of `dsa-harness simulate --index-log LOG OPTIONS`
    in a child process."""
    cmd = [sys.executable, "-c", _CHILD, "simulate", "--index-log", str(log), "--format", "json", *options]
    t = time.perf_counter()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    rss = [line.split()[1] for line in res.stderr.splitlines() if line.startswith("maxrss ")]
    return json.loads(res.stdout)["accesses"], int(rss[-1]) / 1024, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--scale-steps", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = IndexLog(write_synthetic_log(f"{tmp}/gen", steps=16, layers=8, topk=256, prompt=4096, requests=4))
        src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged", page_tokens=64, page_order="shuffled", seed=1))
        for _ in src.chunks(reuse=True):  # compile, touch the buffers
            pass
        n, best = best_of(lambda: sum(len(c) for c in src.chunks(reuse=True)))
        print(f"stream generation: {n / best / 1e6:.0f} M line accesses/s ({n:,} lines, best of 3)")

        common = ["--geometry", "deepseek-v3.2", "--layout", "paged", "--reserve-ways", "8"]
        small = []
        for steps in (max(8, a.steps // 16), a.steps):
            path = write_synthetic_log(f"{tmp}/run{steps}", steps=steps, layers=8, topk=256, prompt=4096, requests=2)
            lines, rss, wall = simulate_child(path, *common, "--llc-size", "32MiB", "--ways", "16")
            small.append(lines / wall)
            print(f"simulate --index-log, {steps} steps ({lines / 1e6:.0f} M line accesses): peak RSS {rss:.0f} MB, "
                  f"{wall:.0f} s, {lines / wall / 1e6:.1f} M lines/s")

        path = write_synthetic_log(f"{tmp}/scale", steps=a.scale_steps, layers=8, topk=2048, prompt=32768, requests=8)
        lines, rss, wall = simulate_child(path, *common, "--llc-size", "256MiB", "--ways", "16")
        print(f"serving scale: 32k context, k = 2048, 8 requests, {a.scale_steps} steps ({lines / 1e6:.0f} M line "
              f"accesses), 256 MiB LLC: peak RSS {rss:.0f} MB, {wall:.0f} s, {lines / wall / 1e6:.1f} M lines/s "
              f"({lines / wall / max(small):.2f}x the small runs' best)")


if __name__ == "__main__":
    main()
