"""What a sweep's tasks cost: the constants of the progress bar's cost model
(``harness.study.progress``), measured on this machine with one torch thread, as a sweep's
workers run.

1. Decode, per backbone: loading it, the prefill per prompt token and one decode step (oracle
   indexer, so no indexer fit is timed; the dsa indexer's scoring adds little to a step).
2. Simulation: a sweep run's stream (DeepSeek-V3.2 geometry, paged) through the built-in
   simulator with its bounds, from a synthetic log shaped like the demo's (k = 128, 30 layers,
   2048-token prompt): seconds per line access, and the fixed part of a run (a 1-step log).

    python bench/sweep_costs.py [--backbones smollm2-135m gemma3-270m tiny-llama tiny-dsa]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from harness.study.progress import run_geometry, stream_lines
from trace_gen.backbones import load_backbone
from trace_gen.decode import DecodeConfig, decode
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

PROMPT, STEPS = 2048, 8


def decode_costs(backbone: str, tmp: str) -> tuple[float, float, float]:
    t = time.perf_counter()
    load_backbone(backbone)
    load = time.perf_counter() - t
    log = IndexLog(decode(DecodeConfig(backbone, "oracle", 128, PROMPT, STEPS), f"{tmp}/{backbone}",
                          progress=False))
    timing = log.meta["timing"]
    return load, timing["prefill_s"] / PROMPT, timing["decode_s"] / STEPS


def sim_seconds(path, steps: int) -> tuple[float, float]:
    log = IndexLog(path)
    t = time.perf_counter()
    src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged", page_tokens=64))
    simulate(src.chunks(reuse=True), LLCConfig.make("16MiB", 16, 4, "token-lru"), bounds=True)
    seconds = time.perf_counter() - t
    run = {"decode": {"prompt_tokens": 2048, "steps": steps, "topk": 128, "requests": 1},
           "stream": {"geometry": "deepseek-v3.2", "weights": False}}
    return seconds, stream_lines(run, run_geometry(run))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="*", default=["smollm2-135m", "gemma3-270m", "tiny-llama", "tiny-dsa"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("DSA_LLC_CACHE", os.path.expanduser("~/.cache/dsa-llc"))
    with tempfile.TemporaryDirectory() as tmp:
        print("DECODE_COST = {  # load (s), prefill (s per prompt token), one step (s per step and request)")
        for backbone in a.backbones:
            load, prefill, step = decode_costs(backbone, tmp)
            print(f'    "{backbone}": ({load:.2g}, {prefill:.2g}, {step:.2g}),')
        print("}")
        small = write_synthetic_log(f"{tmp}/small", steps=1, layers=30, topk=128, prompt=2048)
        big = write_synthetic_log(f"{tmp}/big", steps=24, layers=30, topk=128, prompt=2048)
        sim_seconds(small, 1)  # compile the kernels first, as a worker's first run does once
        fixed, _ = sim_seconds(small, 1)
        seconds, lines = sim_seconds(big, 24)
        print(f"SIM_FIXED_S = {fixed:.2g}")
        print(f"SIM_S_PER_LINE = {(seconds - fixed) / lines:.2g}  # {lines / 1e6:.0f} M lines in {seconds:.1f} s")


if __name__ == "__main__":
    main()
