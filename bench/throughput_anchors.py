"""The whole-step model's decode throughput beside published decode throughputs.

Each anchor runs the built-in model (LLC simulation and closed-loop step time, weights streamed:
the whole step) on a synthetic index log shaped like the real backbones' selections
(trace_gen.synthetic: 70 % step-to-step overlap, a sink, recent tokens favoured) at the anchor's
context, batch and platform, and prints the model's tokens/s beside the published figure and
their ratio. The model need not match: a ratio beyond 2x either way is a known limit, explained
in the README ("Whole decode steps"). What each published figure includes and what the model
leaves out is printed with it.

    python bench/throughput_anchors.py [--steps 3] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.cache.llc import LLCConfig
from harness.cache.platforms import get_platform
from harness.cache.simulate import simulate_stream
from harness.cache.timing import TimingConfig
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log


@dataclass(frozen=True)
class Anchor:
    name: str
    geometry: str
    platform: str
    batch: int            # requests per device
    context: int          # tokens cached per request
    topk: int
    published: float      # tokens/s
    per: str              # "request" or "device": what the published figure counts
    source: str
    note: str             # what the published figure includes that the model does not, or vice versa


ANCHORS = [
    Anchor("llama-8b-b1", "llama-3.1-8b", "h100-sxm", 1, 1024, 2048, 214.56, "request",
           "NVIDIA NIM LLM benchmarking, Llama-3.1-8b-instruct, NIM 1.8.0, concurrency 1: ITL 4.63 ms, "
           "214.56 tokens/s (docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance)",
           "NIM serves FP8 weights (8 GB per step) and reaches about 52 % of the H100's peak bandwidth; "
           "the model streams the BF16 release (15 GB) at 100 %: the two differences about cancel"),
    Anchor("llama-8b-b1-bf16-limit", "llama-3.1-8b", "h100-sxm", 1, 1024, 2048, 3.35e12 / 16.06e9, "request",
           "weight-streaming limit: 16.06 GB of BF16 weights at the H100's 3.35 TB/s (datasheet)",
           "a bound: every weight read once per step at peak bandwidth, nothing else"),
    Anchor("llama-8b-max", "llama-3.1-8b", "h100-sxm", 256, 1088, 2048, 22714, "device",
           "TensorRT-LLM performance overview, Llama 3.1 8B, H100 TP1 FP8, ISL/OSL 128/2048: 22,714 "
           "output tokens/s at an infinite request rate (nvidia.github.io/TensorRT-LLM/performance/"
           "perf-overview.html)",
           "TRT-LLM runs FP8 weights, KV and GEMMs at its largest batch (up to 8192 in its CUDA graphs); "
           "the model runs BF16 at a batch of 256 and a mean context of 1,088 (128 + 2048 / 2)"),
    Anchor("deepseek-day6", "deepseek-v3.2", "h100-sxm", 90, 4989, 2048, 14.8e3 / 8, "device",
           "DeepSeek-V3/R1 Inference System Overview (open-infra-index, day 6): ~14.8k output tokens/s "
           "per H800 node during decoding (1,850 per GPU), 20-22 tokens/s per user, mean KV length "
           "4,989 (so ~84-93 sequences per GPU)",
           "published for V3/R1 (dense MLA attention over all 4,989 tokens, not DSA's top-2048), on H800s "
           "(the H100's HBM and compute), with EP all-to-all dispatch and combine over InfiniBand, "
           "MTP, load imbalance and a day's average of load; the model has no network"),
]


def run(a: Anchor, steps: int, folder: Path) -> dict:
    """Simulate ``steps`` decode steps (the first warms the LLC) of the anchor's configuration."""
    requests = min(a.batch, 8)  # the log's requests; the stream reuses them up to the batch
    log = write_synthetic_log(folder / a.name, steps=steps, layers=8, topk=a.topk, prompt=a.context,
                              requests=requests)
    geometry = PRESETS[a.geometry]
    src = StreamSource(IndexLog(log), geometry, Layout(kind="paged", page_tokens=64, weights=True), batch=a.batch)
    p = get_platform(a.platform)
    cfg = LLCConfig.make(p.llc_size, p.llc_ways)
    return simulate_stream(src, cfg, TimingConfig.make(a.platform), bounds=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="decode steps per anchor (the first warms the LLC)")
    ap.add_argument("--only", nargs="*", help="anchor names")
    args = ap.parse_args()
    print(f"{'anchor':<24}{'model tok/s':>13}{'published':>12}{'ratio':>8}  per      step (ms)  host (s)")
    with tempfile.TemporaryDirectory() as tmp:
        for a in ANCHORS:
            if args.only and a.name not in args.only:
                continue
            t0 = time.perf_counter()
            r = run(a, args.steps, Path(tmp))
            model = r["tokens_per_s"] if a.per == "request" else r["batch_tokens_per_s"]
            print(f"{a.name:<24}{model:>13,.1f}{a.published:>12,.1f}{model / a.published:>8.2f}  {a.per:<8}"
                  f"{r['step_time_s'] * 1e3:>10.2f}{time.perf_counter() - t0:>10.1f}")
            print(f"    published: {a.source}")
            print(f"    model: {a.geometry} ({PRESETS[a.geometry].weights.deployment}), {a.platform}, batch "
                  f"{a.batch}, context {a.context:,}, k {a.topk}; weights {r.get('by_class', {}).get('weights', {}).get('accesses', 0) * 64 / max(r['steps'], 1) / 1e9:.2f} GB per step")
            print(f"    differs: {a.note}")


if __name__ == "__main__":
    main()
