"""What MSHR merging changes in whole decode steps (harness.cache.llc): the merged misses and the
step time with merging (the platform's window) and without (window 1), built-in model only.

On the committed index logs (tests/data/gem5_steptime/logs) and a synthetic 32k-context batch
of 2 (k = 2048), DeepSeek-V3.2, Llama-3.1-8B and native geometry (the synthetic log has no
backbone: no native), weights included, a 32 MiB 16-way LLC without a reservation and with 4
streak ways, at the platform's defaults (h100-sxm: 11,931 requests in flight). Slow on a busy
machine: every run applies a step's weight scans (1-2 minutes each here).

    python bench/mshr_merging.py [--platform h100-sxm] [--logs smollm2 gemma3-b4]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from harness.cache.timing import TimingConfig
from trace_gen.stream import StreamSource
from trace_gen.synthetic import write_synthetic_log

LOGS = Path(__file__).resolve().parent.parent / "tests" / "data" / "gem5_steptime" / "logs"
STREAM = {"layout": "paged", "page_tokens": 64, "page_order": "in-order", "layout_seed": 0, "weights": True}
LLCS = (("32MiB", 0, "lru"), ("32MiB", 4, "streak"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", default="h100-sxm")
    ap.add_argument("--logs", nargs="+", default=["smollm2", "gemma3-b4"], help="of tests/data/gem5_steptime/logs")
    args = ap.parse_args()
    logs = {name: str(LOGS / name) for name in args.logs}
    with tempfile.TemporaryDirectory() as tmp:
        logs["synthetic-32k-b2"] = str(write_synthetic_log(f"{tmp}/s", steps=3, layers=4, topk=2048, prompt=32760,
                                                           requests=2, seed=1))
        t = TimingConfig.make(args.platform)
        worst = 0.0
        for (name, log), geometry, (size, reserve, policy) in itertools.product(
                logs.items(), ("deepseek-v3.2", "llama-3.1-8b", "native"), LLCS):
            if geometry == "native" and name.startswith("synthetic"):
                continue
            r = {}
            for window in (1, None):
                src = StreamSource.from_options(log, {"geometry": geometry, **STREAM})
                r[window] = simulate(src.chunks(as_lines=True, reuse=True, weight_scans=True),
                                     LLCConfig.make(size, 16, reserve, policy), t, bounds=False,
                                     phases=src.phases(), batch=src.batch, mshr_window=window)
            a, b = r[1], r[None]
            change = b["step_time_cycles"] / a["step_time_cycles"] - 1
            worst = max(worst, abs(change))
            print(f"{name:17s} {geometry:13s} {size} {policy}{reserve}: window {b['mshr_window']:,}, merged "
                  f"{b['mshr_merged']:,} of {b['misses']:,} misses; step time {a['step_time_cycles']:,.0f} -> "
                  f"{b['step_time_cycles']:,.0f} cycles ({change:+.4%})", flush=True)
    print(f"largest change of the step time: {worst:.4%}")


if __name__ == "__main__":
    main()
